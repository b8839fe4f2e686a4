"""Trainers that sample solutions of different flatness (DESIGN §3 "Training").

- ``sgd``: SGD with Nesterov momentum and a cosine-annealed learning rate;
- ``rsgd``: replicated SGD (Pittorino et al. 2021; Baldassi et al. 2020):
  ``replicas`` networks initialized independently and trained side by side,
  each on its own minibatches, with the coupling term gamma_t ||w_a - c||^2 to
  their center c (the replicas' mean, held fixed within a step) added to its
  loss. gamma_t = gamma_0 (1 + gamma_1)^t grows every epoch t; gamma_0 is chosen
  so that the coupling term equals the data loss at initialization
  (:func:`auto_gamma0`) and gamma_1 = 1e4^(1/epochs) - 1 (:func:`gamma_rate`), so
  the coupling grows 10^4-fold over the run. Every epoch runs (the replicas
  collapse onto the center by the end) and the result is the center;
- ``adv``: adversarial initialization (Liu et al. 2020): first fit a copy of
  the training data with random labels and a fraction of each input's pixels
  set to black (raw value 0, see :func:`black_level`), then plain SGD (no
  momentum) on the real data;
- networks with binary weights train as BinaryNet: the forward pass uses the
  signs of the latent weights, gradients pass straight through, and the
  latent weights are clipped to [-1, 1] after every step.

Settings follow the paper's appendix A.1 for continuous networks (batch 128,
cosine annealing, Nesterov momentum 0.9 with learning rates 0.02 for sgd and
0.05 for rsgd, 5 replicas; adv: vanilla SGD) and appendix B for binary ones
(batch 100, SGD without momentum, constant learning rate 1.0; rsgd's coupling
gamma_t = 0.002 * 1.002^t; adv: learning rate 10 on random labels, then 5).
The default learning rate of each algorithm comes from its registration in
:mod:`canon.engine.kinds`; adv's, 0.2, departs from the paper's vanilla-SGD
0.02 (which ``canon repro`` passes), for the reason given there. Everything
is seeded: on CPU the same call gives the same network bit for bit.

:data:`PAPER_PROTOCOL` says which protocol is the paper's: a fixed epoch
budget, every epoch run (``target_error=None``). ``target_error`` (default 0.0)
stops sgd and adv at the first epoch whose train error reaches it: faster, and
kept for exploration, but the learning rate is then still near its initial
value and the solutions are sharper than the paper's. rsgd never stops early.

The algorithms are registered in :mod:`canon.engine.kinds` (their trainers are
:func:`train_sgd`, :func:`train_rsgd` and :func:`train_adv` here);
:func:`train` dispatches through that registry.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon.core import Spec, spec_from_module, tied_names
from canon.device import resolve_device
from canon.engine.evaluate import Evaluator, logits_of
from canon.engine.kinds import ALGORITHMS, PAPER_PROTOCOL, AlgorithmInfo, get_algorithm
from canon.engine.landscape import ModelLike, as_data, as_model
from canon.engine.layout import input_layout
from canon.errors import ConfigError

__all__ = [
    "ALGORITHMS",
    "GAMMA_GROWTH",
    "PAPER_PROTOCOL",
    "Fitted",
    "TrainProgress",
    "TrainResult",
    "TrainSetup",
    "auto_gamma0",
    "black_level",
    "gamma_rate",
    "replica_spread",
    "train",
]

#: A registered algorithm's name (:func:`~canon.engine.kinds.list_algorithms`).
Algorithm: TypeAlias = str

#: How much rsgd's coupling grows over a run: gamma_1 = GAMMA_GROWTH^(1/epochs) - 1
#: (``gmax = 1e4`` in the RSGD authors' code, Pittorino et al. 2021).
GAMMA_GROWTH = 1e4

#: Appendix B's coupling for binary networks: gamma_t = 0.002 * 1.002^t.
BINARY_GAMMA = (0.002, 0.002)


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every epoch: phase (``fit`` or ``adv``), epoch, mean minibatch loss,
    train error (the center's, for rsgd; measured only on the epochs where a stop rule
    reads it and after the last one, else None) and learning rate."""

    phase: str
    epoch: int
    epochs: int
    loss: float
    train_error: float | None
    lr: float


@dataclass(frozen=True)
class TrainResult:
    """A trained network and how it got there."""

    state: dict[str, Tensor] = field(repr=False)
    algo: str
    epochs: int  # epochs run in the final phase
    train_error: float
    test_error: float | None
    history: list[dict[str, float]]
    options: dict[str, Any]
    #: the fit phase stopped at an epoch whose mean loss exceeded ``max_loss`` (:func:`train`)
    diverged: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (without the weights)."""
        data = asdict(self)
        del data["state"]
        return data


def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy; for a single output with +-1 labels, the logistic loss (binary CE)."""
    if logits.ndim == 2 and logits.shape[1] == 1:
        return F.softplus(-y.to(logits.dtype) * logits[:, 0]).mean()
    return F.cross_entropy(logits, y)


def _reset(model: nn.Module, seed: int) -> None:
    """Draw ``model``'s parameters afresh from ``seed``: every module's own
    ``reset_parameters``, then, for a library model that has one (transformers'
    ``_init_weights``: GPT-2's normal(0, 0.02) embeddings and projections), the library's
    initialization of each module."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
        library_init = getattr(model, "_init_weights", None)
        if callable(library_init):
            with torch.no_grad():
                model.apply(library_init)


def _clip_binary(model: nn.Module, spec: Spec) -> None:
    with torch.no_grad():
        for name in spec.binary_weights:
            model.get_parameter(name).clamp_(-1.0, 1.0)


#: Appendix B's learning rates for binary networks (adv: the second phase; its random-label
#: phase uses :data:`BINARY_ADV_LR`); any other algorithm uses 1.0.
BINARY_LR = {"sgd": 1.0, "rsgd": 1.0, "adv": 5.0}
BINARY_ADV_LR = 10.0


def _defaults(algo: AlgorithmInfo, binary: bool) -> dict[str, Any]:
    if binary:
        lr = BINARY_LR.get(algo.name, 1.0)
        return {"lr": lr, "momentum": 0.0, "batch_size": 100, "cosine": False}
    return {"lr": algo.lr, "momentum": algo.momentum, "batch_size": 128, "cosine": True}


def gamma_rate(epochs: int) -> float:
    """gamma_1 = GAMMA_GROWTH^(1/epochs) - 1: the coupling grows 10^4-fold over ``epochs``."""
    return float(GAMMA_GROWTH ** (1.0 / max(1, epochs)) - 1.0)


def auto_gamma0(losses: Sequence[float], sq_distances: Sequence[float]) -> float:
    """gamma_0 that makes the coupling term equal the data loss at initialization.

    gamma_0 = mean_a L(w_a) / mean_a ||w_a - c||^2 over the replicas a, with L the
    mean train loss and c the replicas' mean (all parameters, biases included):
    the rule of the RSGD authors' code (Pittorino et al. 2021, ``g = None``:
    "balance coupling and data loss at epoch 0").
    """
    distance = statistics.fmean(sq_distances)
    if not distance > 0:
        raise ConfigError(
            "rsgd's automatic gamma0 needs replicas that start apart; they start identical "
            "(from `init`): give `gamma0`"
        )
    return statistics.fmean(losses) / distance


def _sq_distances(models: Sequence[nn.Module]) -> list[float]:
    """||w_a - c||^2 of every replica a to the replicas' mean c (all parameters)."""
    center = _mean_parameters(list(models))
    with torch.no_grad():
        return [
            sum(float((p - center[k]).square().sum()) for k, p in m.named_parameters())
            for m in models
        ]


def _loss(evaluator: Evaluator, model: nn.Module) -> float:
    """The mean train loss of ``model`` (eval mode)."""
    losses = evaluator.error(model.state_dict(), loss=True).losses
    assert losses is not None
    return float(losses[0])


def replica_spread(models: Sequence[nn.Module]) -> float:
    """The replicas' spread around their center: sqrt(mean_a ||w_a - c||^2)."""
    return math.sqrt(statistics.fmean(_sq_distances(models)))


def black_level(x: Tensor) -> Tensor:
    """Per input feature, the value of a black (raw 0) pixel in the standardized inputs ``x``.

    canon's image datasets standardize raw pixel intensities (darkest 0) with
    train statistics, so raw 0 becomes (0 - mean) / std, the smallest value the
    feature takes on the train split (every pixel of digits, MNIST and CIFAR is
    black in some train image). That minimum is returned (shape ``x.shape[1:]``).
    """
    return x.amin(dim=0)


class _Run:
    """One training phase: replicas, their optimizers and the data."""

    def __init__(
        self,
        models: list[nn.Module],
        spec: Spec,
        x: Tensor,
        y: Tensor,
        lr: float,
        momentum: float,
        batch_size: int,
        epochs: int,
        cosine: bool,
        seed: int,
    ) -> None:
        self.models, self.spec, self.x, self.y = models, spec, x, y
        self.layout = input_layout(models[0], x.device, x)
        self.batch_size, self.epochs = batch_size, epochs
        self.optimizers = [
            torch.optim.SGD(m.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0)
            for m in models
        ]
        self.schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(1, epochs)) if cosine else None
            for o in self.optimizers
        ]
        self.generators = [
            torch.Generator().manual_seed(seed * 7919 + 101 * r) for r in range(len(models))
        ]

    def epoch(self, gamma: float) -> float:
        """One pass over the data for every replica; returns the mean loss."""
        n = self.x.shape[0]
        orders = [torch.randperm(n, generator=g).to(self.x.device) for g in self.generators]
        total, count = 0.0, 0
        for start in range(0, n, self.batch_size):
            center = _mean_parameters(self.models) if gamma > 0 else None
            for r, (model, opt) in enumerate(zip(self.models, self.optimizers, strict=True)):
                idx = orders[r][start : start + self.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(logits_of(model, self.layout(self.x[idx])), self.y[idx])
                loss.backward()  # type: ignore[no-untyped-call]
                if center is not None:
                    # the gradient of the coupling term gamma ||w - c||^2, c held fixed
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            if p.grad is not None:
                                p.grad.add_(p - center[name], alpha=2.0 * gamma)
                opt.step()
                if self.spec.binary_weights:
                    _clip_binary(model, self.spec)
                total += float(loss.detach())
                count += 1
        for scheduler in self.schedulers:
            if scheduler is not None:
                scheduler.step()
        return total / max(1, count)

    @property
    def lr(self) -> float:
        return float(self.optimizers[0].param_groups[0]["lr"])


def _mean_parameters(models: list[nn.Module]) -> dict[str, Tensor]:
    with torch.no_grad():
        named = [dict(m.named_parameters()) for m in models]
        return {k: torch.stack([n[k].detach() for n in named]).mean(0) for k in named[0]}


def _center_state(models: list[nn.Module]) -> dict[str, Tensor]:
    states = [m.state_dict() for m in models]
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype)
        if v.is_floating_point()
        else v.clone()
        for k, v in states[0].items()
    }


@dataclass
class _Phase:
    """Everything one training phase needs besides the networks."""

    spec: Spec
    x: Tensor
    y: Tensor
    evaluator: Evaluator
    lr: float
    momentum: float
    batch_size: int
    cosine: bool
    seed: int
    history: list[dict[str, float]]
    progress: Callable[[TrainProgress], None] | None
    max_loss: float | None = None
    diverged: bool = False


def _fit(
    name: str,
    models: list[nn.Module],
    phase: _Phase,
    epochs: int,
    gamma: Callable[[int], float],
    stop_error: float | None,
) -> tuple[int, float]:
    """Train ``models`` for up to ``epochs``; stop once their center's error <= stop_error,
    or (the ``fit`` phase) once an epoch's mean loss exceeds ``phase.max_loss`` or is NaN,
    which marks ``phase`` diverged."""
    run = _Run(
        models,
        phase.spec,
        phase.x,
        phase.y,
        phase.lr,
        phase.momentum,
        phase.batch_size,
        epochs,
        phase.cosine,
        phase.seed,
    )
    error = 1.0
    for epoch in range(epochs):
        for m in models:
            m.train()
        lr = run.lr
        # A coupling step lr * 2 gamma above 1 would throw a replica past the center and
        # diverge (short runs, where gamma grows fast while lr is still large); cap it there.
        coupling = min(gamma(epoch), 0.5 / lr) if lr > 0 else gamma(epoch)
        loss = run.epoch(coupling)
        record = {"adv": float(name == "adv"), "epoch": epoch + 1, "loss": loss, "lr": lr}
        measured: float | None = None
        # the center's train error costs a pass over the data: measured only where a stop
        # rule reads it and after the last epoch (a fifth of a small net's epoch otherwise)
        if stop_error is not None or epoch + 1 == epochs:
            center = _center_state(models) if len(models) > 1 else models[0].state_dict()
            error = measured = float(phase.evaluator.error(center).errors[0])
            record["train_error"] = error
        if len(models) > 1:
            record |= {"gamma": coupling, "spread": replica_spread(models)}
        phase.history.append(record)
        if phase.progress is not None:
            phase.progress(TrainProgress(name, epoch + 1, epochs, loss, measured, lr))
        if stop_error is not None and error <= stop_error:
            return epoch + 1, error
        if name == "fit" and phase.max_loss is not None and not loss <= phase.max_loss:
            phase.diverged = True
            if measured is None:
                center = _center_state(models) if len(models) > 1 else models[0].state_dict()
                error = float(phase.evaluator.error(center).errors[0])
            return epoch + 1, error
    return epochs, error


def _adversarial_copy(
    x: Tensor, y: Tensor, zero_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """The ADV data: random labels and a fraction of every input's pixels set to black.

    :func:`canon.data.adversarial` zeroes entries; it runs on the inputs shifted by
    :func:`black_level`, so a zeroed entry is a black pixel (raw 0, as in Liu et
    al.), not the pixel mean (0 after standardization).
    """
    from canon.data import Dataset, adversarial

    binary = y.is_floating_point()
    black = black_level(x.float().cpu())
    dataset = Dataset(
        "train",
        x.float().cpu() - black,
        (y.float() if binary else y.long()).cpu(),
        x.float().cpu()[:1],
        (y.float() if binary else y.long()).cpu()[:1],
        num_classes=1 if binary else int(y.max()) + 1,
        input_shape=tuple(x.shape[1:]),
    )
    noisy = adversarial(dataset, zero_fraction=zero_fraction, seed=seed)
    # where the shifted copy is 0 the pixel is black (set, or already black); elsewhere
    # keep x itself (adding the shift back would round)
    inputs = torch.where(noisy.x_train == 0, black, x.float().cpu())
    return inputs.to(x.device, x.dtype), noisy.y_train.to(y.device, y.dtype)


@dataclass(frozen=True)
class TrainSetup:
    """What a trainer (:func:`~canon.engine.kinds.register_algorithm`) gets from :func:`train`.

    ``net`` is initialized and on ``device``; ``phase`` holds the data, the SGD
    settings, the history and the progress callback; the rest are
    :func:`train`'s arguments (``gamma1`` and ``adv_epochs`` not yet defaulted).
    """

    net: nn.Module
    phase: _Phase
    device: torch.device
    epochs: int
    target_error: float | None
    seed: int
    replicas: int
    gamma0: float | None
    gamma1: float | None
    adv_epochs: int | None
    adv_zero_fraction: float | None
    adv_lr: float | None = None
    from_init: bool = False


@dataclass(frozen=True)
class Fitted:
    """A trainer's solution: epochs run in the final phase, its train error, its state and
    the options the algorithm adds to the record."""

    epochs: int
    train_error: float
    state: dict[str, Tensor] = field(repr=False)
    options: dict[str, Any] = field(default_factory=dict)


def train(
    model: ModelLike,
    data: Any,
    algo: Algorithm = "sgd",
    seed: int = 0,
    epochs: int = 300,
    *,
    lr: float | None = None,
    momentum: float | None = None,
    batch_size: int | None = None,
    target_error: float | None = 0.0,
    init: Mapping[str, Tensor] | None = None,
    replicas: int = 5,
    gamma0: float | None = None,
    gamma1: float | None = None,
    adv_epochs: int | None = None,
    adv_zero_fraction: float | None = None,
    adv_lr: float | None = None,
    max_loss: float | None = None,
    device: str | torch.device = "auto",
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train a network on the train split of ``data`` and return the solution.

    ``algo`` names a registered algorithm (:func:`~canon.engine.kinds.list_algorithms`).
    ``model`` is a module template, an architecture name or (name, config);
    its parameters are re-initialized from ``seed`` unless ``init`` gives a
    starting state.

    ``target_error`` stops sgd and adv at the first epoch whose train error is at
    most it; ``None`` runs every epoch, the paper's protocol
    (:data:`PAPER_PROTOCOL`). rsgd always runs every epoch.

    rsgd: ``gamma0`` defaults to :func:`auto_gamma0` (binary networks: appendix
    B's 0.002), ``gamma1`` to :func:`gamma_rate` of ``epochs`` (binary: 0.002).
    adv: ``adv_epochs`` (default ``epochs``) bounds the random-label phase, which
    stops as soon as that copy is fitted; ``adv_lr`` is its learning rate
    (default ``lr``; binary: 10); ``adv_zero_fraction`` of each input's pixels
    are set to black there (default 0.1, Liu et al.; binary: 0, appendix B only
    randomizes labels). ``max_loss`` stops the fit phase (not adv's random-label
    phase) at the first epoch whose mean minibatch loss exceeds it or is NaN; the
    result is then marked ``diverged``. ``progress`` is called after every epoch.
    """
    info = get_algorithm(algo)
    if epochs < 1:
        raise ConfigError(f"`epochs` must be at least 1, got {epochs}")
    if replicas < info.min_replicas:
        raise ConfigError(f"`{algo}` needs at least {info.min_replicas} replicas, got {replicas}")
    dev = resolve_device(device)
    template = as_model(model)
    spec = spec_from_module(template)
    (x, y), test = as_data(data)
    x, y = x.to(dev), y.to(dev)
    binary = bool(spec.binary_weights)
    settings = _defaults(info, binary)
    given = {"lr": lr, "momentum": momentum, "batch_size": batch_size}
    settings.update({k: v for k, v in given.items() if v is not None})
    net = copy.deepcopy(template).to(dev).train()
    if init is not None:
        net.load_state_dict(init)
    else:
        _reset(net, seed)
    history: list[dict[str, float]] = []
    phase = _Phase(
        spec,
        x,
        y,
        Evaluator(net, x, y, dev),
        settings["lr"],
        settings["momentum"],
        settings["batch_size"],
        settings["cosine"],
        seed,
        history,
        progress,
        max_loss,
    )
    options: dict[str, Any] = {
        "algo": algo,
        "seed": seed,
        "epochs": epochs,
        "binary": binary,
        **settings,
        "target_error": target_error,
    }
    if max_loss is not None:
        options["max_loss"] = max_loss
    setup = TrainSetup(
        net,
        phase,
        dev,
        epochs,
        target_error,
        seed,
        replicas,
        gamma0,
        gamma1,
        adv_epochs,
        adv_zero_fraction,
        adv_lr,
        from_init=init is not None,
    )
    fitted = info.train(setup)
    options |= fitted.options
    test_error = None
    if test is not None:
        test_error = float(Evaluator(net, test[0], test[1], dev).error(fitted.state).errors[0])
    tied = tied_names(net)  # a tied tensor is returned once, under its first name
    return TrainResult(
        state={k: v for k, v in fitted.state.items() if k not in tied},
        algo=algo,
        epochs=fitted.epochs,
        train_error=fitted.train_error,
        test_error=test_error,
        history=history,
        options=options,
        diverged=phase.diverged,
    )


def train_sgd(setup: TrainSetup) -> Fitted:
    """``sgd``: SGD (Nesterov momentum, cosine-annealed learning rate) from ``setup.net``."""
    net = setup.net
    ran, error = _fit("fit", [net], setup.phase, setup.epochs, lambda t: 0.0, setup.target_error)
    return Fitted(ran, error, {k: v.detach().clone() for k, v in net.state_dict().items()})


def train_rsgd(setup: TrainSetup) -> Fitted:
    """``rsgd``: independently initialized replicas coupled to their center with
    gamma_t = gamma0 (1 + gamma1)^t for every epoch t; the solution is the center.

    gamma0 and gamma1 default to :func:`auto_gamma0` and :func:`gamma_rate`
    (binary networks: :data:`BINARY_GAMMA`). Replica r > 0 is initialized from
    its own seed (without ``init``; with it, all start there). For stability
    the coupling used in an epoch is at most 1 / (2 lr_t) (a step lr_t 2 gamma
    never passes the center); with the paper's 300 epochs and cosine annealing
    the product stays below that, and ``history`` records the gamma used.
    """
    phase, epochs = setup.phase, setup.epochs
    binary = bool(phase.spec.binary_weights)
    group = [setup.net] + [copy.deepcopy(setup.net) for _ in range(setup.replicas - 1)]
    if not setup.from_init:
        for r, replica in enumerate(group[1:], start=1):
            _reset(replica, setup.seed * 7919 + 104_729 * r)
    gamma0, rule = setup.gamma0, "given"
    if gamma0 is None and binary:
        gamma0, rule = BINARY_GAMMA[0], "appendix B"
    elif gamma0 is None:
        losses = [_loss(phase.evaluator, m) for m in group]
        gamma0, rule = auto_gamma0(losses, _sq_distances(group)), "auto"
    rate = setup.gamma1
    if rate is None:
        rate = BINARY_GAMMA[1] if binary else gamma_rate(epochs)
    start = replica_spread(group)
    ran, error = _fit("fit", group, phase, epochs, lambda t: gamma0 * (1 + rate) ** t, None)
    options = {
        "replicas": setup.replicas,
        "gamma0": gamma0,
        "gamma1": rate,
        "gamma0_rule": rule,
        "spread": [start, replica_spread(group)],
        "target_error": None,
    }
    return Fitted(ran, error, _center_state(group), options)


def train_adv(setup: TrainSetup) -> Fitted:
    """``adv``: fit a random-label copy of the data (a fraction of each input's pixels set
    to black) for at most ``adv_epochs``, then :func:`train_sgd` on the real data."""
    phase, net = setup.phase, setup.net
    binary = bool(phase.spec.binary_weights)
    zero = setup.adv_zero_fraction
    if zero is None:
        zero = 0.0 if binary else 0.1
    adv_lr = setup.adv_lr
    if adv_lr is None:
        adv_lr = BINARY_ADV_LR if binary else phase.lr
    ax, ay = _adversarial_copy(phase.x, phase.y, zero, setup.seed)
    n_adv = setup.adv_epochs or setup.epochs
    adv_phase = dataclasses.replace(
        phase, x=ax, y=ay, lr=adv_lr, evaluator=Evaluator(net, ax, ay, setup.device)
    )
    _fit("adv", [net], adv_phase, n_adv, lambda t: 0.0, 0.0)
    fitted = train_sgd(setup)
    options = {"adv_epochs": n_adv, "adv_zero_fraction": zero, "adv_lr": adv_lr}
    return dataclasses.replace(fitted, options=options)

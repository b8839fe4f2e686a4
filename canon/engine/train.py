"""Trainers that sample solutions of different flatness (DESIGN §3 "Training").

- ``sgd``: SGD with Nesterov momentum and a cosine-annealed learning rate;
- ``rsgd``: replicated SGD (Pittorino et al. 2021): ``replicas`` copies trained
  side by side, each pulled towards their center (the replicas' mean) with a
  coupling gamma_t = gamma_0 (1 + gamma_1)^t growing every epoch; the result
  is the center;
- ``adv``: adversarial initialization (Liu et al. 2020): first fit a copy of
  the training data with random labels and a fraction of the inputs zeroed,
  then plain SGD (no momentum) on the real data;
- networks with binary weights train as BinaryNet: the forward pass uses the
  signs of the latent weights, gradients pass straight through, and the
  latent weights are clipped to [-1, 1] after every step.

Defaults follow the paper's appendix A.1 (continuous networks: batch 128,
learning rates 0.02 / 0.05 with Nesterov momentum 0.9) and B (binary
networks: SGD without momentum, learning rate 1.0, batch 100), scaled for
small problems where noted: adv's plain SGD uses 0.2, the effective step of
sgd's momentum SGD, instead of the paper's 0.02. Everything is seeded: on CPU the
same call gives the same network bit for bit. Training stops early once the
train error reaches ``target_error``.

The algorithms are registered in :mod:`canon.engine.kinds` (their trainers are
:func:`train_sgd`, :func:`train_rsgd` and :func:`train_adv` here);
:func:`train` dispatches through that registry.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon.core import Spec, spec_from_module
from canon.device import resolve_device
from canon.engine.evaluate import Evaluator
from canon.engine.kinds import ALGORITHMS, AlgorithmInfo, get_algorithm
from canon.engine.landscape import ModelLike, as_data, as_model
from canon.errors import ConfigError

__all__ = ["ALGORITHMS", "Fitted", "TrainProgress", "TrainResult", "TrainSetup", "train"]

#: A registered algorithm's name (:func:`~canon.engine.kinds.list_algorithms`).
Algorithm: TypeAlias = str


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every epoch: phase (``fit`` or ``adv``), epoch, loss, train error."""

    phase: str
    epoch: int
    epochs: int
    loss: float
    train_error: float
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def _clip_binary(model: nn.Module, spec: Spec) -> None:
    with torch.no_grad():
        for name in spec.binary_weights:
            model.get_parameter(name).clamp_(-1.0, 1.0)


def _defaults(algo: AlgorithmInfo, binary: bool) -> dict[str, Any]:
    if binary:
        return {"lr": 1.0, "momentum": 0.0, "batch_size": 100, "cosine": False}
    return {"lr": algo.lr, "momentum": algo.momentum, "batch_size": 128, "cosine": True}


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
                loss = loss_fn(model(self.x[idx]), self.y[idx])
                loss.backward()  # type: ignore[no-untyped-call]
                if center is not None:
                    with torch.no_grad():
                        for name, p in model.named_parameters():
                            if p.grad is not None:
                                p.grad.add_(p - center[name], alpha=gamma)
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


def _fit(
    name: str,
    models: list[nn.Module],
    phase: _Phase,
    epochs: int,
    gamma: Callable[[int], float],
    stop_error: float | None,
) -> tuple[int, float]:
    """Train ``models`` for up to ``epochs``; stop once their center's error <= stop_error."""
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
        loss = run.epoch(gamma(epoch))
        center = _center_state(models) if len(models) > 1 else models[0].state_dict()
        error = float(phase.evaluator.error(center).errors[0])
        phase.history.append(
            {
                "adv": float(name == "adv"),
                "epoch": epoch + 1,
                "loss": loss,
                "train_error": error,
                "lr": lr,
            }
        )
        if phase.progress is not None:
            phase.progress(TrainProgress(name, epoch + 1, epochs, loss, error, lr))
        if stop_error is not None and error <= stop_error:
            return epoch + 1, error
    return epochs, error


def _adversarial_copy(
    x: Tensor, y: Tensor, zero_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """The ADV data: random labels and a fraction of every input zeroed (canon.data.adversarial)."""
    from canon.data import Dataset, adversarial

    binary = y.is_floating_point()
    dataset = Dataset(
        "train",
        x.float().cpu(),
        (y.float() if binary else y.long()).cpu(),
        x.float().cpu()[:1],
        (y.float() if binary else y.long()).cpu()[:1],
        num_classes=1 if binary else int(y.max()) + 1,
        input_shape=tuple(x.shape[1:]),
    )
    noisy = adversarial(dataset, zero_fraction=zero_fraction, seed=seed)
    return noisy.x_train.to(x.device, x.dtype), noisy.y_train.to(y.device, y.dtype)


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
    gamma0: float
    gamma1: float | None
    adv_epochs: int | None
    adv_zero_fraction: float


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
    gamma0: float = 1e-3,
    gamma1: float | None = None,
    adv_epochs: int | None = None,
    adv_zero_fraction: float = 0.1,
    device: str | torch.device = "auto",
    progress: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train a network on the train split of ``data`` and return the solution.

    ``algo`` names a registered algorithm (:func:`~canon.engine.kinds.list_algorithms`).
    ``model`` is a module template, an architecture name or (name, config);
    its parameters are re-initialized from ``seed`` unless ``init`` gives a
    starting state. ``gamma1`` defaults to the rate that takes the RSGD
    coupling from ``gamma0`` to 1 over ``epochs``. ``adv_epochs`` (default
    ``epochs``) bounds the random-label phase of ``adv``, which stops as soon as
    that copy is fitted. ``target_error=None`` runs every epoch (no early stop).
    ``progress`` is called after every epoch.
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
    )
    options: dict[str, Any] = {
        "algo": algo,
        "seed": seed,
        "epochs": epochs,
        "binary": binary,
        **settings,
        "target_error": target_error,
    }
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
    )
    fitted = info.train(setup)
    options |= fitted.options
    test_error = None
    if test is not None:
        test_error = float(Evaluator(net, test[0], test[1], dev).error(fitted.state).errors[0])
    return TrainResult(
        state=fitted.state,
        algo=algo,
        epochs=fitted.epochs,
        train_error=fitted.train_error,
        test_error=test_error,
        history=history,
        options=options,
    )


def train_sgd(setup: TrainSetup) -> Fitted:
    """``sgd``: SGD (Nesterov momentum, cosine-annealed learning rate) from ``setup.net``."""
    net = setup.net
    ran, error = _fit("fit", [net], setup.phase, setup.epochs, lambda t: 0.0, setup.target_error)
    return Fitted(ran, error, {k: v.detach().clone() for k, v in net.state_dict().items()})


def train_rsgd(setup: TrainSetup) -> Fitted:
    """``rsgd``: replicas coupled to their center with gamma_t = gamma0 (1 + gamma1)^t.

    ``gamma1`` defaults to the rate that takes the coupling from ``gamma0`` to 1
    over the epochs; the solution is the replicas' center.
    """
    gamma0, epochs = setup.gamma0, setup.epochs
    rate = (
        setup.gamma1
        if setup.gamma1 is not None
        else (1.0 / gamma0) ** (1.0 / max(1, epochs - 1)) - 1
    )
    # replicas start together and drift apart through their own minibatch orders
    group = [setup.net] + [copy.deepcopy(setup.net) for _ in range(setup.replicas - 1)]
    ran, error = _fit(
        "fit", group, setup.phase, epochs, lambda t: gamma0 * (1 + rate) ** t, setup.target_error
    )
    options = {"replicas": setup.replicas, "gamma0": gamma0, "gamma1": rate}
    return Fitted(ran, error, _center_state(group), options)


def train_adv(setup: TrainSetup) -> Fitted:
    """``adv``: fit a random-label copy of the data (a fraction of each input zeroed) for at
    most ``adv_epochs``, then :func:`train_sgd` on the real data."""
    phase, net = setup.phase, setup.net
    ax, ay = _adversarial_copy(phase.x, phase.y, setup.adv_zero_fraction, setup.seed)
    n_adv = setup.adv_epochs or setup.epochs
    adv_phase = dataclasses.replace(
        phase, x=ax, y=ay, evaluator=Evaluator(net, ax, ay, setup.device)
    )
    _fit("adv", [net], adv_phase, n_adv, lambda t: 0.0, 0.0)
    fitted = train_sgd(setup)
    options = {"adv_epochs": n_adv, "adv_zero_fraction": setup.adv_zero_fraction}
    return dataclasses.replace(fitted, options=options)

"""Optimized single-bend paths (DESIGN §3 "Optimized single-bend path")."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
from torch import Tensor

from canon.core import (
    apply_alignment,
    match,
    normalize,
    normalize_with_scales,
    rescale,
    spec_from_module,
    unit_scales,
)
from canon.core.paths import geodesic_path
from canon.core.precision import state_dtype, to_working
from canon.device import resolve_device
from canon.engine.evaluate import Evaluator, logits_of
from canon.engine.kinds import MIDPOINT_LR, MIDPOINT_LR_HALVINGS, bend_kind
from canon.engine.landscape import ModelLike, PathCurve, as_data, as_model, path_curve
from canon.engine.train import TrainProgress, loss_fn, train
from canon.errors import ConfigError

__all__ = ["MidpointResult", "divergence_loss", "optimize_midpoint"]

#: A path a midpoint starts from (:data:`~canon.engine.kinds.MIDPOINT_PATHS`).
MidpointPath: TypeAlias = str


@dataclass(frozen=True)
class MidpointResult:
    """The optimized midpoint, the bend path's curve through it, and the training record."""

    state: dict[str, Tensor] = field(repr=False)
    curve: PathCurve
    train_error: float
    epochs: int
    options: dict[str, Any]
    #: the learning rate the midpoint was trained with (``lr`` halved after divergences)
    lr: float = 0.0
    #: how many trainings diverged and were restarted at half the learning rate
    restarts: int = 0

    @property
    def barrier(self) -> float:
        """The barrier along the two legs."""
        return self.curve.barrier


def optimize_midpoint(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    model: ModelLike,
    data: Any,
    path: MidpointPath = "geodesic",
    *,
    epochs: int = 300,
    lr: float = MIDPOINT_LR,
    batch_size: int = 128,
    target_error: float | None = None,
    lr_halvings: int = MIDPOINT_LR_HALVINGS,
    seed: int = 0,
    points: int = 25,
    device: str | torch.device = "auto",
    progress: Callable[[TrainProgress], None] | None = None,
) -> MidpointResult:
    """Find a low-error midpoint m between a and b and evaluate the bend path a -> m -> b.

    m starts at the midpoint (x = 0.5) of the ``path`` between the endpoints:
    the geodesic midpoint of the normalized, aligned endpoints (put at the endpoints'
    scale: each unit's scale and the output layer's norm the mean of the two
    endpoints', :func:`~canon.core.rescale`; the same function), or the
    arithmetic mean of the raw (``linear``) or aligned (``linear_aligned``)
    endpoints. It is trained with SGD (Nesterov momentum, learning rate 0.02
    cosine-annealed over ``epochs``, batch 128) for every epoch: the paper's
    protocol (Fig. 10: 300 epochs). A ``target_error`` stops it at the first
    epoch whose train error is at most that instead.

    A training that diverges (an epoch's mean loss above :func:`divergence_loss`:
    SGD threw m out of its basin, back toward chance level, and what it then
    trains to is far from both endpoints) is stopped and restarted from the same
    m at half the learning rate, at most ``lr_halvings`` times; the last try runs
    to the end whatever its loss (``lr_halvings=0``: the protocol as is). The
    result records the rate used and the restarts. The returned curve runs
    along the two legs (geodesic legs with m normalized and aligned to a, or
    straight legs); its barrier is the max error over both.
    """
    kind = bend_kind(path)
    if points % 2 == 0:
        raise ConfigError(f"`points` must be odd so that m sits at x = 0.5, got {points}")
    if not lr >= 0 or math.isinf(lr):
        raise ConfigError(f"`lr` must be a finite number at least 0, got {lr}")
    if lr_halvings < 0:
        raise ConfigError(f"`lr_halvings` must be at least 0, got {lr_halvings}")
    dev = resolve_device(device)
    template = as_model(model)
    spec = spec_from_module(template)
    dtype = state_dtype(a, b)
    a, b = to_working(a, dev, dtype), to_working(b, dev, dtype)
    if path == "geodesic":
        (start, a_scales), norm_b = normalize_with_scales(a, spec), normalize(b, spec)
        alignment = match(norm_b, start, spec)
        end = apply_alignment(norm_b, alignment, spec)
        half = torch.tensor([0.5], dtype=torch.float64)
        middle = geodesic_path(start, end, spec, half).state(0)
        # the same function at the endpoints' scale: SGD's steps are not scale-invariant,
        # and from unit-norm units they carried midpoints far from both endpoints
        b_scales = unit_scales(apply_alignment(b, alignment, spec), spec)
        m0 = rescale(middle, spec, a_scales.mean(b_scales))
    else:
        end = b
        if path == "linear_aligned":
            alignment = match(normalize(b, spec), normalize(a, spec), spec)
            end = apply_alignment(b, alignment, spec)
        m0 = {k: (a[k] + end[k]) / 2 if a[k].is_floating_point() else a[k] for k in a}
    cap = divergence_loss(template, m0, data, dev) if lr_halvings else None
    rate = lr
    for restarts in range(lr_halvings + 1):
        trained = train(
            template,
            data,
            "sgd",
            seed=seed,
            epochs=epochs,
            lr=rate,
            batch_size=batch_size,
            momentum=0.9,
            target_error=target_error,
            init=m0,
            max_loss=cap if restarts < lr_halvings else None,
            device=dev,
            progress=progress,
        )
        if not trained.diverged:
            break
        rate /= 2
    curve = path_curve(a, b, template, data, kind, points, dev, midpoint=trained.state, spec=spec)
    return MidpointResult(
        state=trained.state,
        curve=curve,
        train_error=trained.train_error,
        epochs=trained.epochs,
        options={
            "path": path,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "target_error": target_error,
            "lr_halvings": lr_halvings,
            "seed": seed,
        },
        lr=rate,
        restarts=restarts,
    )


def divergence_loss(
    model: ModelLike, start: Mapping[str, Tensor], data: Any, device: str | torch.device = "cpu"
) -> float:
    """The mean train loss above which training from ``start`` has diverged: halfway from
    ``start``'s own loss to chance level (the loss of constant outputs: ln C for C
    classes, ln 2 for one output), and never below ``start``'s loss."""
    dev = resolve_device(device)
    (x, y), _ = as_data(data, state_dtype(start))
    evaluator = Evaluator(as_model(model), x, y, dev)
    losses = evaluator.error(dict(start), loss=True).losses
    assert losses is not None
    own = float(losses[0])
    with torch.no_grad():  # every example's loss is the same at constant outputs
        constant = torch.zeros_like(logits_of(evaluator.model, evaluator.x[:1]))
        chance = float(loss_fn(constant, evaluator.y[:1]))
    return max(own, (own + chance) / 2)

"""Optimized single-bend paths (DESIGN §3 "Optimized single-bend path")."""

from __future__ import annotations

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
from canon.device import resolve_device
from canon.engine.kinds import bend_kind
from canon.engine.landscape import ModelLike, PathCurve, as_model, path_curve
from canon.engine.train import TrainProgress, train
from canon.errors import ConfigError

__all__ = ["MidpointResult", "optimize_midpoint"]

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
    lr: float = 0.02,
    batch_size: int = 128,
    target_error: float | None = None,
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
    epoch whose train error is at most that instead. The returned curve runs
    along the two legs (geodesic legs with m normalized and aligned to a, or
    straight legs); its barrier is the max error over both.
    """
    kind = bend_kind(path)
    if points % 2 == 0:
        raise ConfigError(f"`points` must be odd so that m sits at x = 0.5, got {points}")
    dev = resolve_device(device)
    template = as_model(model)
    spec = spec_from_module(template)
    a = {k: v.to(dev) for k, v in a.items()}
    b = {k: v.to(dev) for k, v in b.items()}
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
    trained = train(
        template,
        data,
        "sgd",
        seed=seed,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        momentum=0.9,
        target_error=target_error,
        init=m0,
        device=dev,
        progress=progress,
    )
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
            "seed": seed,
        },
    )

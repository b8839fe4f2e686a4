"""The error landscape between networks: curves along paths, barriers, local energy, planes.

DESIGN §3 "Paths", "Error and barrier", "Flatness", "Planes". The energy is
the train error (fraction misclassified; single output: sign). Every result is
a frozen record that serializes to JSON and back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from canon.architectures import build_model
from canon.core import (
    Alignment,
    Spec,
    apply_alignment,
    check_state,
    match,
    normalize,
    spec_from_module,
)
from canon.core.geometry import Distances, distances
from canon.core.paths import (
    Path,
    bend_path,
    flip_path,
    geodesic_path,
    linear_path,
    plane_grid,
    positions,
)
from canon.core.records import JsonRecord
from canon.device import resolve_device
from canon.engine.batchnorm import has_batchnorm, with_recomputed_statistics
from canon.engine.evaluate import Evaluator
from canon.engine.noise import perturbation_path
from canon.errors import ConfigError

__all__ = [
    "PATH_KINDS",
    "LocalEnergy",
    "PathCurve",
    "PlaneResult",
    "as_data",
    "as_model",
    "local_energy",
    "path_curve",
    "plane",
]

PathKind = Literal[
    "linear",
    "linear_aligned",
    "geodesic",
    "bend",
    "bend_linear",
    "bend_linear_aligned",
    "random_flip",
    "random_flip_aligned",
]
PATH_KINDS: tuple[str, ...] = get_args(PathKind)
BNMode = Literal["recompute", "interpolate"]

ModelLike = nn.Module | str | tuple[str, Mapping[str, Any]]


def as_model(model: ModelLike) -> nn.Module:
    """An ``nn.Module`` template from a module, an architecture name, or (name, config)."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, str):
        return build_model(model)
    name, config = model
    return build_model(name, config)


def as_data(data: Any) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
    """(train, test) pairs from an (x, y) pair or a dataset object with train/test splits."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        return (torch.as_tensor(x), torch.as_tensor(y)), None
    if hasattr(data, "x_train") and hasattr(data, "y_train"):
        test = None
        if getattr(data, "x_test", None) is not None:
            test = (data.x_test, data.y_test)
        return (data.x_train, data.y_train), test
    raise ConfigError("`data` must be an (x, y) pair of tensors or a dataset with x_train/y_train")


def _floats(t: Tensor | None) -> list[float] | None:
    return None if t is None else [float(v) for v in t]


@dataclass(frozen=True)
class PathCurve:
    """The error along a path between two networks, its barrier and the options used.

    ``barrier`` = max_i E(x_i); ``excess`` = max_i [E(x_i) - ((1 - x_i) E(0) + x_i E(1))].
    For random-flip paths the curve is the mean over the orders (``train_error_std``
    their standard deviation) and ``barrier``/``excess`` are the mean over orders of
    each order's value (``barrier_std`` their standard deviation).
    """

    kind: str
    x: list[float]
    train_error: list[float]
    barrier: float
    excess: float
    distances: Distances
    options: dict[str, Any] = field(default_factory=dict)
    train_loss: list[float] | None = None
    test_error: list[float] | None = None
    train_error_std: list[float] | None = None
    barrier_std: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse of :meth:`from_dict`)."""
        data = asdict(self)
        data["distances"] = self.distances.to_dict()
        return data

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathCurve:
        """Rebuild from :meth:`to_dict` output."""
        values = dict(data)
        values["distances"] = Distances.from_dict(values["distances"])
        return cls(**values)


def barrier_and_excess(x: Tensor, errors: Tensor) -> tuple[float, float]:
    """The barrier max_i E(x_i) and the excess over the line between the endpoint errors."""
    line = (1 - x) * errors[0] + x * errors[-1]
    return float(errors.max()), float((errors - line).max())


def _evaluator(
    model: nn.Module, split: tuple[Tensor, Tensor], device: torch.device, batch: int
) -> Evaluator:
    return Evaluator(model, split[0], split[1], device, batch)


def path_curve(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    model: ModelLike,
    data: Any,
    kind: PathKind = "geodesic",
    points: int = 25,
    device: str | torch.device = "auto",
    *,
    midpoint: Mapping[str, Tensor] | None = None,
    spec: Spec | None = None,
    loss: bool = False,
    test: bool = False,
    bn: BNMode = "recompute",
    bn_batches: int = 20,
    bn_batch_size: int = 256,
    orders: int = 5,
    seed: int = 0,
    batch_size: int = 10_000,
) -> PathCurve:
    """Evaluate the train error (optionally loss and test error) along a path from a to b.

    ``kind``: ``linear`` (raw parameters), ``linear_aligned`` (b aligned to a,
    not normalized), ``geodesic`` (normalized and aligned; per-unit slerp),
    ``bend`` (two geodesic legs through ``midpoint``, which is normalized and
    aligned to a), ``bend_linear`` / ``bend_linear_aligned`` (two straight legs
    through ``midpoint`` as given, to b raw / aligned to a), ``random_flip`` and
    ``random_flip_aligned`` (binary networks: ``orders`` seeded flip orders,
    mean and std). ``points`` positions from 0 to 1 inclusive; the endpoints
    are the endpoint networks themselves. For networks with BatchNorm, the
    running statistics at interior points are recomputed on ``bn_batches``
    training batches of ``bn_batch_size`` (``bn="recompute"``) or interpolated
    (``bn="interpolate"``); the choice is recorded in ``options``.
    """
    if kind not in PATH_KINDS:
        raise ConfigError(f"unknown path kind `{kind}`; choose one of {', '.join(PATH_KINDS)}")
    template = as_model(model)
    spec = spec or spec_from_module(template)
    check_state(a, spec, "`a`")
    check_state(b, spec, "`b`")
    dev = resolve_device(device)
    train, test_split = as_data(data)
    if test and test_split is None:
        raise ConfigError("`test=True` needs a dataset with a test split")
    x = positions(points)
    a = {k: v.to(dev) for k, v in a.items()}
    b = {k: v.to(dev) for k, v in b.items()}
    norm_a, norm_b = normalize(a, spec, check=False), normalize(b, spec, check=False)
    alignment = match(norm_b, norm_a, spec)
    dists = distances(a, b, spec, alignment)
    options: dict[str, Any] = {"points": points, "seed": seed}

    paths = _build_paths(
        kind, a, b, norm_a, norm_b, alignment, spec, x, midpoint, orders, seed, dev
    )
    if kind.startswith("random_flip"):
        options["orders"] = orders
    if has_batchnorm(template):
        options["bn"] = bn
        if bn == "recompute":
            options |= {"bn_batches": bn_batches, "bn_batch_size": bn_batch_size}
            interior = range(1, points - 1)
            train_x = train[0].to(dev)
            paths = [
                with_recomputed_statistics(
                    p, template, train_x, interior, bn_batches, bn_batch_size
                )
                for p in paths
            ]
    evaluator = _evaluator(template, train, dev, batch_size)
    scores = [evaluator.evaluate(p, loss=loss) for p in paths]
    errors = torch.stack([s.errors for s in scores])  # [R, K]
    per_order = [barrier_and_excess(x, e) for e in errors]
    barriers = torch.tensor([b for b, _ in per_order], dtype=torch.float64)
    excesses = torch.tensor([e for _, e in per_order], dtype=torch.float64)
    test_error = None
    if test and test_split is not None:
        test_eval = _evaluator(template, test_split, dev, batch_size)
        test_error = torch.stack([test_eval.evaluate(p).errors for p in paths]).mean(0)
    losses = None
    if loss:
        losses = torch.stack([s.losses for s in scores if s.losses is not None]).mean(0)
    several = len(paths) > 1
    return PathCurve(
        kind=kind,
        x=_floats(x) or [],
        train_error=_floats(errors.mean(0)) or [],
        barrier=float(barriers.mean()),
        excess=float(excesses.mean()),
        distances=dists,
        options=options,
        train_loss=_floats(losses),
        test_error=_floats(test_error),
        train_error_std=_floats(errors.std(0, unbiased=False)) if several else None,
        barrier_std=float(barriers.std(unbiased=False)) if several else None,
    )


def _build_paths(
    kind: str,
    a: dict[str, Tensor],
    b: dict[str, Tensor],
    norm_a: dict[str, Tensor],
    norm_b: dict[str, Tensor],
    alignment: Alignment,
    spec: Spec,
    x: Tensor,
    midpoint: Mapping[str, Tensor] | None,
    orders: int,
    seed: int,
    device: torch.device,
) -> list[Path]:
    if kind == "linear":
        return [linear_path(a, b, x)]
    if kind == "linear_aligned":
        return [linear_path(a, apply_alignment(b, alignment, spec), x)]
    if kind == "geodesic":
        return [geodesic_path(norm_a, apply_alignment(norm_b, alignment, spec), spec, x)]
    if kind.startswith("bend"):
        if midpoint is None:
            raise ConfigError(f"a `{kind}` path needs a `midpoint` network")
        check_state(midpoint, spec, "`midpoint`")
        m = {k: v.to(device) for k, v in midpoint.items()}
        if kind == "bend_linear":
            return [bend_path(a, m, b, spec, x, legs="linear")]
        if kind == "bend_linear_aligned":
            aligned_b = apply_alignment(b, alignment, spec)
            return [bend_path(a, m, aligned_b, spec, x, legs="linear")]
        m = normalize(m, spec, check=False)
        m = apply_alignment(m, match(m, norm_a, spec), spec)
        return [bend_path(norm_a, m, apply_alignment(norm_b, alignment, spec), spec, x)]
    if not spec.binary_weights:
        raise ConfigError(f"`{kind}` paths need a network with binary weights")
    if orders < 1:
        raise ConfigError(f"`orders` must be at least 1, got {orders}")
    end = apply_alignment(b, alignment, spec) if kind == "random_flip_aligned" else b
    return [flip_path(a, end, spec, x, seed + r) for r in range(orders)]


@dataclass(frozen=True)
class LocalEnergy(JsonRecord):
    """Local energy dE(w, sigma) = E_z[E(w + sigma z * w)] - E(w) at each sigma (mean and
    std over draws). Binary networks: sigma is the fraction of weights flipped."""

    sigmas: list[float]
    mean: list[float]
    std: list[float]
    base_error: float
    options: dict[str, Any] = field(default_factory=dict)


def local_energy(
    state: Mapping[str, Tensor],
    model: ModelLike,
    data: Any,
    sigmas: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5),
    draws: int = 10,
    seed: int = 0,
    device: str | torch.device = "auto",
    *,
    spec: Spec | None = None,
    batch_size: int = 10_000,
) -> LocalEnergy:
    """The local energy (flatness) of ``state`` on the train split of ``data``.

    Every floating parameter w is perturbed multiplicatively, w + sigma z w
    with z ~ N(0, 1) elementwise; for binary networks a random fraction sigma
    of the binary weights is flipped instead. Averaged over ``draws`` seeded draws.
    """
    if draws < 1:
        raise ConfigError(f"`draws` must be at least 1, got {draws}")
    if any(s < 0 or not math.isfinite(s) for s in sigmas):
        raise ConfigError("`sigmas` must be finite and non-negative")
    template = as_model(model)
    spec = spec or spec_from_module(template)
    check_state(state, spec, "`state`")
    dev = resolve_device(device)
    train, _ = as_data(data)
    state = {k: v.to(dev) for k, v in state.items()}
    evaluator = _evaluator(template, train, dev, batch_size)
    base = float(evaluator.error(state).errors[0])
    path = perturbation_path(state, spec, list(sigmas), draws, seed)
    errors = evaluator.evaluate(path).errors.reshape(len(sigmas), draws) - base
    return LocalEnergy(
        sigmas=[float(s) for s in sigmas],
        mean=_floats(errors.mean(1)) or [],
        std=_floats(errors.std(1, unbiased=False)) or [],
        base_error=base,
        options={"draws": draws, "seed": seed, "binary": bool(spec.binary_weights)},
    )


@dataclass(frozen=True)
class PlaneResult(JsonRecord):
    """Train errors on a grid of the plane through three networks.

    ``errors[i][j]`` is the error at (alphas[i], betas[j]); ``anchors`` are the
    (alpha, beta) positions of a, b, c.
    """

    alphas: list[float]
    betas: list[float]
    errors: list[list[float]]
    anchors: list[list[float]]
    normalized: bool
    options: dict[str, Any] = field(default_factory=dict)


def plane(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    c: Mapping[str, Tensor],
    model: ModelLike,
    data: Any,
    grid: int = 21,
    margin: float = 0.2,
    normalized: bool = False,
    device: str | torch.device = "auto",
    *,
    spec: Spec | None = None,
    batch_size: int = 10_000,
) -> PlaneResult:
    """Train error on a ``grid`` x ``grid`` section of the plane through a, b and c.

    The plane is spanned by the three networks' floating parameters
    (Gram-Schmidt, Garipov et al.); with ``normalized`` each network is
    normalized first (the plane itself is not). Buffers (BN running
    statistics) stay at a's values across the plane. Pass c = b aligned to a
    to see the effect of alignment, as in the paper's Fig. 4.
    """
    if grid < 2:
        raise ConfigError(f"`grid` must be at least 2, got {grid}")
    template = as_model(model)
    spec = spec or spec_from_module(template)
    for name, s in (("a", a), ("b", b), ("c", c)):
        check_state(s, spec, f"`{name}`")
    dev = resolve_device(device)
    train, _ = as_data(data)
    sa, sb, sc = ({k: v.to(dev) for k, v in s.items()} for s in (a, b, c))
    if normalized:
        sa, sb, sc = (normalize(s, spec, check=False) for s in (sa, sb, sc))
    section = plane_grid(sa, sb, sc, spec.parameters, grid, margin)
    errors = _evaluator(template, train, dev, batch_size).evaluate(section.path).errors
    return PlaneResult(
        alphas=_floats(section.alphas) or [],
        betas=_floats(section.betas) or [],
        errors=errors.reshape(grid, grid).tolist(),
        anchors=section.anchors.tolist(),
        normalized=normalized,
        options={"grid": grid, "margin": margin},
    )

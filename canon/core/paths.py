"""Paths between networks as lazily evaluated sequences of state dicts (DESIGN §3 "Paths").

A :class:`NetworkPath` holds positions x_0..x_{K-1} in [0, 1] and, for every tensor
of the state dict, a rule giving its value at point k. Along the linear,
geodesic, bend and plane paths every tensor is a :class:`Combination` of a few
fixed basis tensors with coefficients per unit (or one per tensor). The engine
uses that structure: a layer's outputs for all K points combine from one
product per basis instead of K products. Random-flip paths of binary networks
are :class:`Flips`. Endpoints are reproduced exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch
from torch import Tensor

from canon.core.host_reads import on_host
from canon.core.spec import Producer, Spec, UnitGroup, layout_of
from canon.core.units import split_rows, unit_positions, unit_vectors
from canon.errors import ConfigError

__all__ = [
    "MAX_POINTS",
    "Combination",
    "Constant",
    "Flips",
    "NetworkPath",
    "PlaneGrid",
    "PointValues",
    "TensorPath",
    "at_points",
    "bend_path",
    "check_points",
    "flip_path",
    "geodesic_path",
    "linear_path",
    "plane_grid",
    "positions",
    "slerp_basis",
]


class TensorPath(Protocol):
    """One tensor's value along a path."""

    def at(self, k: int) -> Tensor:
        """The tensor at point k."""
        ...


def at_points(path: TensorPath, ks: Sequence[int]) -> Tensor:
    """The tensor at each point of ``ks``, stacked on a new first axis: the values ``at``
    gives, number for number (one vectorized step where the rule has one, ``at_many``)."""
    many = getattr(path, "at_many", None)
    if many is not None:
        return many(ks)  # type: ignore[no-any-return]
    return torch.stack([path.at(k) for k in ks])


def _index(ks: Sequence[int]) -> slice | list[int]:
    """``ks`` as an index of a tensor's first axis: a slice for a run of points (no index
    tensor to copy to the device)."""
    if isinstance(ks, range) and ks.step == 1:
        return slice(ks.start, ks.stop)
    return list(ks)


@dataclass(frozen=True, eq=False)
class Constant:
    """A tensor that does not move (integer buffers such as BN's batch counter)."""

    value: Tensor

    def at(self, k: int) -> Tensor:
        return self.value

    def at_many(self, ks: Sequence[int]) -> Tensor:
        return self.value.expand(len(ks), *self.value.shape)


@dataclass(frozen=True, eq=False)
class Combination:
    """Point k = sum_j coefs[k, j, u] * bases[j], unit u indexing axis 0 of the tensor.

    ``coefs`` has shape [K, J, U] with U the tensor's size on axis 0 (one
    coefficient per unit) or 1 (one for the whole tensor).
    """

    bases: tuple[Tensor, ...]
    coefs: Tensor

    @cached_property
    def placed_coefs(self) -> Tensor:
        """``coefs`` on the bases' device, in their dtype (copied once: a copy to a GPU
        per point and tensor would be a host sync each, thousands per pair for a
        ResNet's BatchNorm statistics)."""
        base = self.bases[0]
        return self.coefs.to(device=base.device, dtype=base.dtype)

    def at(self, k: int) -> Tensor:
        base = self.bases[0]
        shape = (self.coefs.shape[2],) + (1,) * max(base.ndim - 1, 0)
        if base.ndim == 0:
            shape = ()
        c = self.placed_coefs[k]
        out = c[0].reshape(shape) * base
        for j in range(1, len(self.bases)):  # in place: one tensor the size of a basis
            out.addcmul_(c[j].reshape(shape), self.bases[j])
        return out

    def at_many(self, ks: Sequence[int]) -> Tensor:
        # the same products and sums as ``at``, each point's on its own slice
        base = self.bases[0]
        c = self.placed_coefs[_index(ks)]
        shape = (len(ks), self.coefs.shape[2]) + (1,) * max(base.ndim - 1, 0)
        if base.ndim == 0:
            shape = (len(ks),)
        out = c[:, 0].reshape(shape) * base
        for j in range(1, len(self.bases)):
            out.addcmul_(c[:, j].reshape(shape), self.bases[j])
        return out


@dataclass(frozen=True, eq=False)
class PointValues:
    """Values given point by point: ``values[k]`` at point k."""

    values: Tensor

    def at(self, k: int) -> Tensor:
        return self.values[k]

    def at_many(self, ks: Sequence[int]) -> Tensor:
        return self.values[_index(ks)]


@dataclass(frozen=True, eq=False)
class Flips:
    """Binary weights flipped in a fixed order: at point k the entries of rank < counts[k]
    take ``end``'s value, the others ``start``'s."""

    start: Tensor
    end: Tensor
    rank: Tensor
    counts: Tensor

    def at(self, k: int) -> Tensor:
        return torch.where(self.rank < self.counts[k], self.end, self.start)

    def at_many(self, ks: Sequence[int]) -> Tensor:
        counts = self.counts[_index(ks)].reshape((len(ks),) + (1,) * self.rank.ndim)
        return torch.where(self.rank < counts, self.end, self.start)


@dataclass(frozen=True, eq=False)
class NetworkPath:
    """Positions ``x`` ([K], in [0, 1]) and each tensor's rule along the path."""

    x: Tensor
    tensors: Mapping[str, TensorPath]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def state(self, k: int) -> dict[str, Tensor]:
        """The state dict at point k."""
        return {name: path.at(k) for name, path in self.tensors.items()}


MAX_POINTS = 4097  # points along one path: far beyond any curve's resolution need


def check_points(points: int) -> int:
    """``points`` if a path can have that many points (2 to ``MAX_POINTS``), else ConfigError."""
    if isinstance(points, bool) or not isinstance(points, int) or not 2 <= points <= MAX_POINTS:
        raise ConfigError(
            f"a path needs 2 to {MAX_POINTS} points (endpoints included), got `points`={points!r}"
        )
    return points


def positions(points: int) -> Tensor:
    """``points`` evenly spaced positions from 0 to 1 inclusive (float64)."""
    return torch.linspace(0.0, 1.0, check_points(points), dtype=torch.float64)


def _line(x: Tensor) -> Tensor:
    """The coefficients [K, 2, 1] of (1 - x) a + x b: one tensor for every tensor of a
    path that moves linearly (no one writes into a path's coefficients)."""
    return torch.stack([1 - x, x], dim=1).unsqueeze(2)


#: The most numbers :func:`slerp_basis` holds in float64 at once (a block of rows).
_SLERP_BLOCK = 1 << 22


def _constant_or_linear(a: Tensor, b: Tensor, line: Tensor) -> TensorPath:
    """a to b along ``line`` (:func:`_line`), or a where it is not floating."""
    return Combination((a, b), line) if a.is_floating_point() else Constant(a)


def _lines(a: Mapping[str, Tensor], b: Mapping[str, Tensor], x: Tensor) -> dict[str, TensorPath]:
    """Every tensor of a moving linearly to b's (:func:`_constant_or_linear`)."""
    line = _line(x)
    return {n: _constant_or_linear(a[n], b[n], line) for n in a}


def linear_path(a: Mapping[str, Tensor], b: Mapping[str, Tensor], x: Tensor) -> NetworkPath:
    """(1 - x) a + x b for every floating tensor; other tensors stay at a's value."""
    return NetworkPath(x, _lines(a, b, x))


def slerp_basis(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per row of ``a`` and ``b`` (units on axis 0): (u, theta, |a|, |b|).

    ``u`` is the unit vector orthogonal to a in the plane of a and b (any
    orthogonal unit vector when b is parallel or antiparallel to a) and theta
    the angle from a to b, so that the great circle from a's direction is
    cos(x theta) a_hat + sin(x theta) u and reaches b's direction at x = 1.
    Computed in float64 a block of rows at a time (at most
    :data:`_SLERP_BLOCK` numbers), so a wide layer needs no float64 copy of itself.
    """
    u, theta, norm_a, norm_b = _circle(a, b, True)
    assert u is not None
    return u, theta, norm_a, norm_b


def _circle(a: Tensor, b: Tensor, with_u: bool) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
    """:func:`slerp_basis`, without ``u`` (``None``) unless ``with_u``."""
    rows_a = a.reshape(a.shape[0], -1)
    rows_b = b.reshape(b.shape[0], -1)
    n, width = rows_a.shape
    step = max(1, min(n, _SLERP_BLOCK // max(1, width)))
    if 0 < n <= step:  # one block: float64 copies of its own (fewer ops, the same numbers)
        copies = [rows_a.to(torch.float64, copy=True), rows_b.to(torch.float64, copy=True)]
        one_u, *found = _slerp_rows(copies[0], copies[1], [*copies, None], with_u)
        theta, norm_a, norm_b = found
        one_u = None if one_u is None else one_u.to(a.dtype).reshape(a.shape)
        return one_u, theta, norm_a, norm_b
    u = torch.empty_like(rows_a) if with_u else None
    parts: list[tuple[Tensor, Tensor, Tensor]] = []
    # float64 workspaces that every block reuses: blocks that allocated their own left
    # the heap fragmented (resident memory grew by 1.7 GB over one 102M-weight layer)
    space = [torch.empty((step, width), dtype=torch.float64, device=a.device) for _ in range(3)]
    for start in range(0, n, step):
        stop = min(start + step, n)
        block_u, *rest = _slerp_rows(
            rows_a[start:stop], rows_b[start:stop], [w[: stop - start] for w in space], with_u
        )
        if u is not None and block_u is not None:
            u[start:stop] = block_u.to(a.dtype)
        parts.append((rest[0], rest[1], rest[2]))
    if not parts:  # no units
        empty = torch.empty(0, dtype=torch.float64, device=a.device)
        return (None if u is None else u.reshape(a.shape)), empty, empty, empty
    theta, norm_a, norm_b = (torch.cat(t) for t in zip(*parts, strict=True))
    return (None if u is None else u.reshape(a.shape)), theta, norm_a, norm_b


def _slerp_rows(
    a: Tensor, b: Tensor, space: list[Tensor | None], with_u: bool = True
) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
    """:func:`slerp_basis` of a block of rows, worked in the float64 tensors of ``space``
    (their shape): a's and b's rows (copied in, unless ``a`` and ``b`` are those very
    tensors) and a workspace (None: new ones); u is b's, or ``None`` unless ``with_u``
    (then nothing is read off the device)."""
    rows_a, rows_b, work = space
    assert rows_a is not None and rows_b is not None
    if rows_a is not a:
        rows_a.copy_(a)
    if rows_b is not b:
        rows_b.copy_(b)
    tiny = torch.finfo(torch.float64).tiny
    norm_a = rows_a.norm(dim=1)
    norm_b = rows_b.norm(dim=1)
    a_hat = rows_a.div_(norm_a.clamp_min(tiny).unsqueeze(1))
    b_hat = rows_b.div_(norm_b.clamp_min(tiny).unsqueeze(1))
    cos = torch.mul(a_hat, b_hat, out=work).sum(dim=1)
    perp = b_hat.sub_(torch.mul(a_hat, cos.unsqueeze(1), out=work))
    sin = perp.norm(dim=1)
    theta = torch.atan2(sin, cos)
    if not with_u:
        return None, theta, norm_a, norm_b
    u = perp.div_(sin.clamp_min(tiny).unsqueeze(1))
    flat = (sin <= 0).nonzero().flatten()
    if flat.numel():
        # where b is (anti)parallel to a: the axis where a is smallest, made orthogonal to a
        hat = a_hat[flat]
        axis = hat.abs().argmin(dim=1)
        e = torch.zeros_like(hat).scatter_(1, axis.unsqueeze(1), 1.0)
        fallback = e - (e * hat).sum(dim=1, keepdim=True) * hat
        u[flat] = fallback / fallback.norm(dim=1, keepdim=True).clamp_min(tiny)
    return u, theta, norm_a, norm_b


#: The largest angle at which a great circle is written in its endpoints alone, as
#: slerp's sin((1 - x) theta) / sin(theta) a + sin(x theta) / sin(theta) b: rounding grows
#: as 1 / sin(theta), at most 1.7-fold here. Beyond it, and for zero rows, the circle also
#: holds the unit vector u orthogonal to a (:func:`slerp_basis`), exact at every angle.
_ENDS_ONLY_ANGLE = 2.5


def _great_circles(ends: Sequence[tuple[Tensor, Tensor, bool]], x: Tensor) -> list[Combination]:
    """Each (a, b, per_unit) of ``ends``: each unit (or the whole tensor) moving along its
    great circle at fraction x, its norm interpolated linearly (constant on the spheres of
    normalized networks); bases (a, b) where every unit's angle allows
    (:data:`_ENDS_ONLY_ANGLE`), else (a, u, b). The circles' angles and norms are read off
    the device at once, and the coefficients of all those in their endpoints alone
    computed together (elementwise: each unit's as if alone)."""
    rows = [(a, b) if per_unit else (a.reshape(1, -1), b.reshape(1, -1)) for a, b, per_unit in ends]
    found = [torch.stack(_circle(ra, rb, False)[1:]) for ra, rb in rows]  # [3, U] each
    # coefficients live on the CPU with the positions, like every path's; bases stay put
    measured = on_host(found)
    xs = x.cpu().unsqueeze(1)  # [K, 1]
    at_start, at_end = x == 0, x == 1
    ends_only = [
        m.shape[1] == 0 or (bool((m[0] <= _ENDS_ONLY_ANGLE).all()) and bool((m[1:] > 0).all()))
        for m in measured
    ]
    circles: dict[int, Combination] = {}
    chosen = [i for i, only in enumerate(ends_only) if only]
    if chosen:
        theta, norm_a, norm_b = torch.cat([measured[i] for i in chosen], 1)
        tiny = torch.finfo(torch.float64).tiny
        radius = (1 - xs) * norm_a + xs * norm_b  # [K, U]
        sin = torch.sin(theta)
        turning = theta > 0  # else a and b share a direction: the weights are 1 - x and x
        weight_a = torch.where(turning, torch.sin((1 - xs) * theta) / sin.clamp_min(tiny), 1 - xs)
        weight_b = torch.where(turning, torch.sin(xs * theta) / sin.clamp_min(tiny), xs)
        coef_a, coef_b = radius * weight_a / norm_a, radius * weight_b / norm_b
        coef_a[at_start], coef_b[at_start] = 1.0, 0.0  # exact endpoints
        coef_a[at_end], coef_b[at_end] = 0.0, 1.0
        coefs = torch.stack([coef_a, coef_b], dim=1)  # [K, 2, sum U]
        sizes = [measured[i].shape[1] for i in chosen]
        for i, part in zip(chosen, torch.split(coefs, sizes, dim=2), strict=True):
            circles[i] = Combination((ends[i][0], ends[i][1]), part.contiguous())
    for i, only in enumerate(ends_only):
        if not only:
            circles[i] = _wide_circle(ends[i][0], ends[i][1], rows[i], measured[i], xs, x)
    return [circles[i] for i in range(len(ends))]


def _wide_circle(
    a: Tensor, b: Tensor, rows: tuple[Tensor, Tensor], measured: Tensor, xs: Tensor, x: Tensor
) -> Combination:
    """:func:`_great_circles`' circle of ``a`` and ``b`` (as ``rows``) in (a, u, b): some
    unit's angle is wider than :data:`_ENDS_ONLY_ANGLE` or some row is zero."""
    theta, norm_a, norm_b = measured
    tiny = torch.finfo(torch.float64).tiny
    radius = (1 - xs) * norm_a + xs * norm_b  # [K, U]
    u = slerp_basis(*rows)[0]
    coef_a = radius * torch.cos(xs * theta) / norm_a.clamp_min(tiny)
    coef_u = radius * torch.sin(xs * theta)
    coef_b = torch.zeros_like(coef_a)
    at_start, at_end = x == 0, x == 1
    coef_a[at_start], coef_u[at_start] = 1.0, 0.0  # exact endpoints
    coef_a[at_end], coef_u[at_end], coef_b[at_end] = 0.0, 0.0, 1.0
    coefs = torch.stack([coef_a, coef_u, coef_b], dim=1)  # [K, 3, U]
    return Combination((a, u.reshape(a.shape), b), coefs)


def geodesic_path(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], spec: Spec, x: Tensor
) -> NetworkPath:
    """The geodesic between two normalized, aligned networks.

    Every hidden unit's incoming weights (its rows in all of its group's
    producers) move along their great circle at the same fraction x (slerp),
    the output layer's weight along its sphere; biases, BatchNorm parameters,
    running statistics and the units that are not on spheres (not normalized:
    tanh, GELU, attention's dimensions) move linearly.
    """
    tensors = _lines(a, b, x)
    # the rows of each weight that are units on spheres (a part of a fused layer's rows)
    turning: dict[str, list[Tensor | None]] = {}
    # groups whose units' rows lie in several layers: one great circle per unit through all
    shared_groups: list[tuple[UnitGroup, Tensor, Tensor]] = []
    for group in spec.groups:
        if not group.on_sphere:
            continue  # units not on spheres move linearly (DESIGN §3b)
        if not group.shared:
            (producer,) = group.producers
            rows = _rows_of(producer, group.size, a[producer.weight].shape[0])
            turning.setdefault(producer.weight, []).append(rows)
            continue
        rows_a = unit_vectors(a, group, effective=False)
        rows_b = unit_vectors(b, group, effective=False)
        shared_groups.append((group, rows_a, rows_b))
    indices = {name: _joined_rows(taken) for name, taken in turning.items()}
    # every circle at once: the shared groups', each turning weight's rows, the output's
    ends = [(rows_a, rows_b, True) for _, rows_a, rows_b in shared_groups]
    ends += [(_taken(a[n], i), _taken(b[n], i), True) for n, i in indices.items()]
    if spec.output is not None:
        ends.append((a[spec.output.weight], b[spec.output.weight], False))
    circles = iter(_great_circles(ends, x))
    # rows of a weight on great circles through several layers' rows (a shared group's):
    # each group's rows of it, with their circles' bases and coefficients
    shared: dict[str, list[tuple[Tensor | None, Combination]]] = {}
    for group, _, _ in shared_groups:
        circle = next(circles)
        parts = [split_rows(base, group, a) for base in circle.bases]
        for producer in group.producers:
            name = producer.weight
            index = _rows_of(producer, group.size, a[name].shape[0])
            found = Combination(tuple(p[name] for p in parts), circle.coefs)
            shared.setdefault(name, []).append((index, found))
    for name, index in indices.items():
        circle = next(circles)
        if name in shared:  # its other rows turn with a shared group's
            shared[name].append((index, circle))
        else:
            tensors[name] = _circle_rows(a[name], b[name], x, index, circle)
    for name, held in shared.items():
        whole = len(held) == 1 and held[0][0] is None
        tensors[name] = held[0][1] if whole else _rows_on_circles(a[name], b[name], x, held)
    if spec.output is not None:
        tensors[spec.output.weight] = next(circles)
    return NetworkPath(x, tensors)


def _joined_rows(taken: list[Tensor | None]) -> Tensor | None:
    """The rows of a weight that several groups turn, joined (None: some group turns all)."""
    if any(rows is None for rows in taken):
        return None
    return torch.cat([rows for rows in taken if rows is not None])


def _taken(t: Tensor, index: Tensor | None) -> Tensor:
    """Rows ``index`` of ``t`` (all of them for None)."""
    return t if index is None else t[index]


def _rows_of(producer: Producer, size: int, rows: int) -> Tensor | None:
    """The producer's rows that are the group's ``size`` units (None: all ``rows``)."""
    layout = layout_of(producer)
    if size == rows and not (layout["start"] or layout["stride"]):
        return None
    positions = unit_positions(size, 1, 1, layout["head"], layout["stride"])
    return positions.reshape(-1) + layout["start"]


def _circle_rows(
    a: Tensor, b: Tensor, x: Tensor, index: Tensor | None, circle: Combination
) -> Combination:
    """A weight whose rows ``index`` (None: all) move along their great circles
    (``circle``, of those rows), the other rows (another part of a fused layer, not on
    spheres) along the straight line."""
    if index is None:
        return circle
    steps, bases = circle.coefs.shape[:2]
    xs = x.cpu().to(circle.coefs.dtype).unsqueeze(1)
    coefs = torch.zeros(steps, bases, a.shape[0], dtype=circle.coefs.dtype)
    coefs[:, 0], coefs[:, bases - 1] = 1 - xs, xs
    coefs[:, :, index] = circle.coefs
    if bases == 2:
        return Combination((a, b), coefs)
    turn = torch.zeros_like(a)
    turn[index] = circle.bases[1]
    return Combination((a, turn, b), coefs)


def _rows_on_circles(
    a: Tensor, b: Tensor, x: Tensor, circles: list[tuple[Tensor | None, Combination]]
) -> Combination:
    """A weight whose rows ``index`` move along the great circles given for them (each
    circle's bases those rows: (a, b) or (a, u, b)), its other rows along the line."""
    coefs = torch.zeros(len(x), 3, a.shape[0], dtype=torch.float64)
    xs = x.cpu().to(coefs.dtype).unsqueeze(1)
    coefs[:, 0], coefs[:, 2] = 1 - xs, xs
    turn = torch.zeros_like(a)
    for index, circle in circles:
        rows = slice(None) if index is None else index
        last = len(circle.bases) - 1
        coefs[:, 0, rows], coefs[:, 2, rows] = circle.coefs[:, 0], circle.coefs[:, last]
        coefs[:, 1, rows] = circle.coefs[:, 1] if last == 2 else 0.0
        if last == 2:
            turn[rows] = circle.bases[1]
    return Combination((a, turn, b), coefs)


def _join(first: TensorPath, second: TensorPath, k1: int) -> TensorPath:
    if (
        isinstance(first, Combination)
        and isinstance(second, Combination)
        and first.coefs.shape[2] == second.coefs.shape[2]
    ):
        j1, j2 = first.coefs.shape[1], second.coefs.shape[1]
        top = torch.cat([first.coefs, first.coefs.new_zeros(k1, j2, first.coefs.shape[2])], 1)
        rest = second.coefs[1:]
        bottom = torch.cat([rest.new_zeros(rest.shape[0], j1, rest.shape[2]), rest], 1)
        return Combination(first.bases + second.bases, torch.cat([top, bottom], 0))
    if isinstance(first, Constant):
        return first
    raise TypeError("cannot join these tensor paths")  # pragma: no cover


def bend_path(
    a: Mapping[str, Tensor],
    m: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    spec: Spec,
    x: Tensor,
    legs: str = "geodesic",
) -> NetworkPath:
    """Two legs a -> m -> b, geodesic (DESIGN §3 "bend") or ``legs="linear"``; m sits at x = 0.5.

    ``x`` must contain 0.5; points below it lie on the first leg, above it on
    the second, each leg traversed at uniform speed in its own fraction.
    """
    split = int(torch.searchsorted(x, torch.tensor(0.5, dtype=x.dtype)))
    if split >= len(x) or not math.isclose(float(x[split]), 0.5):
        raise ConfigError("a bend path needs an odd number of points (x = 0.5 is the midpoint)")
    if legs == "geodesic":
        leg1 = geodesic_path(a, m, spec, x[: split + 1] * 2)
        leg2 = geodesic_path(m, b, spec, x[split:] * 2 - 1)
    elif legs == "linear":
        leg1 = linear_path(a, m, x[: split + 1] * 2)
        leg2 = linear_path(m, b, x[split:] * 2 - 1)
    else:
        raise ConfigError(f"`legs` must be geodesic or linear, got {legs!r}")
    k1 = split + 1
    tensors = {n: _join(leg1.tensors[n], leg2.tensors[n], k1) for n in a}
    return NetworkPath(x, tensors)


def flip_path(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    spec: Spec,
    x: Tensor,
    seed: int,
) -> NetworkPath:
    """A random shortest path between two binary networks.

    The binary weights that differ in sign are flipped from a's sign to b's
    in one random order (seeded), a fraction x of them by point x; every other
    floating tensor moves linearly.
    """
    names = spec.binary_weights
    if not names:
        raise ConfigError("random-flip paths need a network with binary weights")
    starts = {n: torch.sign(a[n]) for n in names}
    ends = {n: torch.sign(b[n]) for n in names}
    differ = torch.cat([(starts[n] != ends[n]).reshape(-1) for n in names])
    total = int(differ.sum())
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=gen)
    ranks = torch.full((differ.numel(),), total, dtype=torch.int64)  # never flipped
    ranks[differ.cpu().nonzero().squeeze(1)] = order
    counts = torch.round(x * total).to(torch.int64)
    tensors = _lines(a, b, x)
    offset = 0
    for n in names:
        size = starts[n].numel()
        rank = ranks[offset : offset + size].reshape(starts[n].shape).to(starts[n].device)
        tensors[n] = Flips(starts[n], ends[n], rank, counts.to(starts[n].device))
        offset += size
    return NetworkPath(x, tensors)


@dataclass(frozen=True, eq=False)
class PlaneGrid:
    """A grid on the plane through three networks: the path over its points, the
    grid axes (in parameter-space distance units), and the three networks' positions."""

    path: NetworkPath
    alphas: Tensor
    betas: Tensor
    anchors: Tensor  # [3, 2]: (alpha, beta) of a, b, c


def plane_grid(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    c: Mapping[str, Tensor],
    names: Sequence[str],
    grid: int,
    margin: float,
) -> PlaneGrid:
    """The plane through a, b, c (Gram-Schmidt on the named tensors) sampled on a grid.

    Basis: u = (b - a)/|b - a|, v = the part of c - a orthogonal to u,
    normalized. The grid spans the three networks' coordinates plus ``margin``
    times the extent on every side (Garipov et al.); point (alpha, beta) is
    a + alpha u + beta v. Tensors outside ``names`` stay at a's value.
    """
    vec_a = torch.cat([a[n].reshape(-1).double() for n in names])
    vec_b = torch.cat([b[n].reshape(-1).double() for n in names])
    vec_c = torch.cat([c[n].reshape(-1).double() for n in names])
    u = vec_b - vec_a
    length = u.norm()
    if float(length) <= 1e-12 * float(vec_a.norm()):
        raise ConfigError("a plane needs three distinct networks: a and b are equal")
    u = u / length
    w = vec_c - vec_a
    v = w - (w @ u) * u
    height = v.norm()
    if float(height) <= 1e-9 * float(w.norm()):
        raise ConfigError("a plane needs three networks not on one line")
    v = v / height
    anchors = torch.tensor(
        [[0.0, 0.0], [float(length), 0.0], [float(w @ u), float(height)]], dtype=torch.float64
    )
    lo, hi = anchors.min(0).values, anchors.max(0).values
    extent = hi - lo
    lo, hi = lo - margin * extent, hi + margin * extent
    alphas = torch.linspace(float(lo[0]), float(hi[0]), grid, dtype=torch.float64)
    betas = torch.linspace(float(lo[1]), float(hi[1]), grid, dtype=torch.float64)
    ga, gb = torch.meshgrid(alphas, betas, indexing="ij")
    coefs = torch.stack([torch.ones_like(ga), ga, gb], dim=-1).reshape(-1, 3, 1)
    tensors: dict[str, TensorPath] = {n: Constant(a[n]) for n in a}
    offset = 0
    for n in names:
        size = a[n].numel()
        shape, dtype = a[n].shape, a[n].dtype
        u_n = u[offset : offset + size].reshape(shape).to(dtype=dtype, device=a[n].device)
        v_n = v[offset : offset + size].reshape(shape).to(dtype=dtype, device=a[n].device)
        tensors[n] = Combination((a[n], u_n, v_n), coefs)
        offset += size
    x = torch.zeros(grid * grid, dtype=torch.float64)
    return PlaneGrid(NetworkPath(x, tensors), alphas, betas, anchors)

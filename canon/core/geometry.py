"""Geometry on the space of networks: angles, distances (DESIGN §3 "Distances").

Pure functions on state dicts. Each hidden unit of a normalized network is a
point on the unit sphere and the output layer a point on the sphere of radius
sqrt(H^L); the geodesic distance sums the squared great-circle distances on
all of them. Binary networks are compared by the Hamming distance between the
signs of their weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from canon.core.host_reads import on_host
from canon.core.matching import match
from canon.core.normalization import normalize
from canon.core.permutations import Alignment, Moved
from canon.core.spec import Spec, UnitGroup, check_state, layout_of
from canon.core.units import producer_rows, unit_slices, unit_vectors

__all__ = [
    "Distances",
    "angles",
    "distances",
    "flat",
    "free_distance",
    "geodesic_distance",
    "hamming",
]


#: How many numbers a distance holds in float64 at once (a block of tensors, or of units'
#: rows), by device type: on a CPU small enough to stay in cache; elsewhere (a GPU, where
#: each block costs launches and the host's time) most layers whole. No network-sized
#: temporary is made either way.
BLOCK: dict[str, int] = {"cpu": 1 << 18}
_OTHER_BLOCK = 1 << 22


def _block(device: torch.device) -> int:
    """:data:`BLOCK` for ``device``."""
    return BLOCK.get(device.type, _OTHER_BLOCK)


def angles(a: Tensor, b: Tensor) -> Tensor:
    """Angle between corresponding rows of ``a`` and ``b`` (any norms), in [0, pi].

    Computed as atan2(|b_perp|, a.b) with b_perp the part of b orthogonal to a:
    the same value as arccos of the clipped cosine, but accurate near 0 and pi.
    """
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a_hat = a / a.norm(dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    b_norm = b.norm(dim=1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
    b_hat = b / b_norm
    cos = (a_hat * b_hat).sum(dim=1)
    sin = (b_hat - cos.unsqueeze(1) * a_hat).norm(dim=1)
    return torch.atan2(sin, cos)


def flat(state: Mapping[str, Tensor], names: tuple[str, ...]) -> Tensor:
    """The named tensors of ``state`` concatenated into one vector."""
    return torch.cat([state[n].reshape(-1) for n in names])


def _squared_euclidean(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], names: tuple[str, ...]
) -> list[Tensor]:
    """||a - b||^2 over the named tensors (:func:`_squared_sums`)."""
    return _squared_sums([(a[n], b[n]) for n in names])


def _squared_sums(pairs: Sequence[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """The sum of ||x - y||^2 over ``pairs`` of tensors of one shape, in float64: one
    scalar per device they are on (none without pairs). Consecutive tensors are packed
    into blocks of at most :func:`_block` numbers, a large one cut into several: a few
    ops for a network of many small tensors, and no copy of a whole one."""
    sums: dict[torch.device, Tensor] = {}
    for bx, by in _packed(pairs):
        diff = bx - by
        _accumulate(sums, torch.dot(diff, diff))
    return list(sums.values())


def _packed(pairs: Sequence[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
    """The pairs' tensors flattened, cut and packed into blocks in float64 (:func:`_squared_sums`):
    each block's parts on one device, in order (one pair: its tensors' same blocks)."""
    xs: list[Tensor] = []
    ys: list[Tensor] = []
    held = 0
    for x, y in pairs:
        flat_x, flat_y = x.reshape(-1), y.reshape(-1)
        block = _block(x.device)
        for start in range(0, flat_x.numel(), block):
            part_x, part_y = flat_x[start : start + block], flat_y[start : start + block]
            if xs and (held + part_x.numel() > block or xs[0].device != part_x.device):
                yield _joined(xs), _joined(ys)
                xs, ys, held = [], [], 0
            xs.append(part_x)
            ys.append(part_y)
            held += part_x.numel()
    if xs:
        yield _joined(xs), _joined(ys)


def _joined(parts: list[Tensor]) -> Tensor:
    """The flat ``parts`` as one float64 vector."""
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).double()


def _read(values: Sequence[Tensor]) -> list[float]:
    """Scalars (on any devices) as floats, read off each device once."""
    return [float(v) for v in on_host(values)]


def _vector_angle(x: Tensor, y: Tensor) -> Tensor:
    """The angle between ``x`` and ``y`` seen as one vector each: :func:`angles` of the
    two as single rows, computed in float64 a block at a time (an output layer as wide as
    a vocabulary needs no float64 copy of itself); a float64 scalar on their device."""
    tiny = torch.finfo(torch.float64).tiny
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)  # |x|^2, |y|^2, x.y
    for bx, by in _packed([(x, y)]):
        sums += torch.stack([torch.dot(bx, bx), torch.dot(by, by), torch.dot(bx, by)])
    norm_x, norm_y = sums[0].sqrt().clamp_min(tiny), sums[1].sqrt().clamp_min(tiny)
    cos = sums[2] / norm_x / norm_y
    perp = torch.zeros((), dtype=torch.float64, device=x.device)  # |y_hat - cos x_hat|^2
    for bx, by in _packed([(x, y)]):
        rest = by / norm_y - cos * (bx / norm_x)
        perp += torch.dot(rest, rest)
    return torch.atan2(perp.sqrt(), cos)


def geodesic_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], spec: Spec) -> float:
    """sqrt(sum_k angle_k^2 + (sqrt(H^L) angle_L)^2) between two normalized, aligned networks.

    angle_k is the angle between the incoming weights of hidden unit k in the
    two networks (its rows in all the group's producers), angle_L the angle
    between the two output-layer weights (seen as one vector each). Biases
    and BatchNorm parameters do not count, nor do units that normalization
    leaves at their own scale (see :func:`free_distance`).
    """
    return math.sqrt(sum(_read(_squared_geodesic(a, b, spec))))


def _squared_geodesic(a: Mapping[str, Tensor], b: Mapping[str, Tensor], spec: Spec) -> list[Tensor]:
    """The squared :func:`geodesic_distance`, as one float64 scalar per device the
    networks' groups are on (none without groups on spheres or an output layer)."""
    sums: dict[torch.device, Tensor] = {}  # the groups' squared angles summed, by device
    for group in spec.groups:
        if not group.on_sphere:
            continue
        rows_a = unit_vectors(a, group, effective=False)
        rows_b = unit_vectors(b, group, effective=False)
        # float64 a block of rows at a time
        step = max(1, _block(rows_a.device) // max(1, rows_a[0].numel()))
        for start in range(0, group.size, step):
            theta = angles(
                rows_a[start : start + step].double(), rows_b[start : start + step].double()
            )
            _accumulate(sums, theta.square().sum())
    if spec.output is not None:
        theta_out = _vector_angle(a[spec.output.weight], b[spec.output.weight])
        _accumulate(sums, spec.output.size * theta_out.square())
    return list(sums.values())


def _accumulate(sums: dict[torch.device, Tensor], value: Tensor) -> None:
    """Add the scalar ``value`` to the sum of its device in ``sums``."""
    sums[value.device] = sums[value.device] + value if value.device in sums else value


def free_distance(a: Mapping[str, Tensor], b: Mapping[str, Tensor], spec: Spec) -> float | None:
    """Euclidean distance between the incoming weights of the units that are not on a
    sphere (symmetry ``none``: GELU, ReLU6, norm-layer streams; tanh and softsign
    units, sign-fixed but not normalized; attention's ``linear`` dimensions, with the
    key rows) of two aligned networks; ``None`` when the architecture has no such
    units (DESIGN §3b)."""
    squares = _squared_free(a, b, spec)
    return None if squares is None else math.sqrt(sum(_read(squares)))


def _squared_free(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor], spec: Spec
) -> list[Tensor] | None:
    """The squared :func:`free_distance`, one float64 scalar per device (``None``: no free
    units)."""
    free = [g for g in spec.groups if not g.on_sphere]
    if not free:
        return None
    return _squared_sums(
        [
            parts
            for group in free
            for parts in zip(_free_parts(a, group), _free_parts(b, group), strict=True)
        ]
    )


def _free_parts(state: Mapping[str, Tensor], group: UnitGroup) -> Iterator[Tensor]:
    """A free group's units' rows, a part at a time (their squared distances add up): their
    incoming weights in each producer and, for attention's query dimensions, the key rows
    that no other group counts (DESIGN §3b)."""
    for producer in group.producers:
        yield producer_rows(state, producer, False, group.size)
    if group.symmetry != "linear":
        return
    for o in group.outgoing:
        if o.axis == 0 and state[o.name].ndim > 1:
            yield unit_slices(state[o.name], 0, group.size, **layout_of(o))


def hamming(a: Mapping[str, Tensor], b: Mapping[str, Tensor], names: tuple[str, ...]) -> int:
    """Number of entries of the named tensors whose signs differ between ``a`` and ``b``."""
    return int(sum(int((torch.sign(a[n]) != torch.sign(b[n])).sum()) for n in names))


@dataclass(frozen=True)
class Distances:
    """Every distance between two networks that applies to their architecture.

    ``euclidean``: raw parameters; ``euclidean_aligned``: b aligned to a (not
    normalized); ``geodesic``: normalized and aligned (per-sphere sum);
    ``euclidean_free``: normalized and aligned, over the units that normalization
    leaves at their own scale (no scale symmetry: tanh, GELU, norm-layer streams),
    which are not on spheres (only for architectures that have such units).
    Binary networks also get the Hamming distance between weight signs, raw and
    aligned, as a count and as a fraction of the binary weights.
    """

    euclidean: float
    euclidean_aligned: float
    geodesic: float
    euclidean_free: float | None = None
    hamming: int | None = None
    hamming_fraction: float | None = None
    hamming_aligned: int | None = None
    hamming_aligned_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, without the entries that do not apply."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Distances:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def distances(
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    spec: Spec,
    alignment: Alignment | None = None,
    method: str = "auto",
    normalized: tuple[Mapping[str, Tensor], Mapping[str, Tensor]] | None = None,
    check: bool = True,
) -> Distances:
    """All distances between networks ``a`` and ``b`` (see :class:`Distances`).

    ``b`` is aligned to ``a`` (``method`` on the normalized networks) unless the
    alignment of ``b`` to ``a`` is given. Symmetric up to the alignment heuristic.
    ``normalized``: the two networks normalized, when the caller has them already.
    ``check``: check both against ``spec`` (shapes, finite values), unless the caller did.
    """
    if check:
        check_state(a, spec, "`a`")
        check_state(b, spec, "`b`")
    params = spec.parameters
    norm_a, norm_b = normalized if normalized is not None else (
        normalize(a, spec, check=False),
        normalize(b, spec, check=False),
    )  # fmt: skip
    if alignment is None:
        alignment = match(norm_b, norm_a, spec, method)
    # b moved a tensor at a time as each is read: no aligned copy of a whole network
    aligned_b = Moved(b, alignment, spec)
    canon_b = Moved(norm_b, alignment, spec)
    # every distance's squares first (a scalar per device each), read off at once
    terms = [
        _squared_euclidean(a, b, params),
        _squared_euclidean(a, aligned_b, params),
        _squared_geodesic(norm_a, canon_b, spec),
        _squared_free(norm_a, canon_b, spec),
    ]
    read = _read([v for values in terms for v in values or []])
    totals: list[float | None] = []
    for values in terms:
        totals.append(None if values is None else math.sqrt(sum(read[: len(values)])))
        read = read[len(values or []) :]
    result: dict[str, Any] = {
        "euclidean": totals[0],
        "euclidean_aligned": totals[1],
        "geodesic": totals[2],
        "euclidean_free": totals[3],
    }
    binary = spec.binary_weights
    if binary:
        count = sum(a[n].numel() for n in binary)
        raw, aligned = hamming(a, b, binary), hamming(a, aligned_b, binary)
        result |= {
            "hamming": raw,
            "hamming_fraction": raw / count,
            "hamming_aligned": aligned,
            "hamming_aligned_fraction": aligned / count,
        }
    return Distances(**result)

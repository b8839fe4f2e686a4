"""Per-unit views and updates of tensors along a unit axis.

Unit ``k`` of a group owns index ``k`` of a tensor's unit axis, or the
contiguous block ``[k * block, (k + 1) * block)`` when a conv output was
flattened into a linear layer, counted from ``start`` when the units are a
part of a fused tensor (the rest of the axis is left as it is), ``repeat``
times over when several query heads share a key/value head, and in runs of
``head`` units ``stride`` apart when a fused projection interleaves its parts
head by head (:func:`unit_positions`). These helpers are the only place that
knows that layout; :func:`~canon.core.spec.layout_of` reads it off an axis.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from canon.core.spec import Producer, UnitGroup, layout_of

__all__ = [
    "at_units",
    "bn_gain",
    "gather_units",
    "permute_units",
    "producer_rows",
    "scale_batchnorm_input",
    "scale_units",
    "split_rows",
    "unit_norms",
    "unit_positions",
    "unit_slices",
    "unit_vectors",
]


def _expand(values: Tensor, block: int) -> Tensor:
    return values if block == 1 else values.repeat_interleave(block)


def _simple(repeat: int, stride: int) -> bool:
    """Whether the units sit in one contiguous run (no repeats, no interleaving)."""
    return repeat == 1 and stride == 0


def unit_positions(
    units: int,
    block: int = 1,
    repeat: int = 1,
    head: int = 1,
    stride: int = 0,
    device: torch.device | None = None,
) -> Tensor:
    """``[units, repeat * block]``: the indices along an axis (counted from the units'
    start) that each unit owns.

    Unit k owns its ``block`` entries. The units come in runs of ``head`` (a head's
    dimensions); run g starts at ``g * stride`` (by default right after the previous
    one: a fused projection's part interleaved with the others head by head has a
    longer stride). With ``repeat`` > 1 the axis holds each run ``repeat`` times in a
    row (the query heads that share a key/value head, grouped-query attention): a run
    is laid out as [repeat, head, block].
    """
    span = repeat * head * block
    stride = stride or span
    groups = units // head
    g = torch.arange(groups, device=device).view(groups, 1, 1, 1)
    i = torch.arange(repeat, device=device).view(1, repeat, 1, 1)
    j = torch.arange(head, device=device).view(1, 1, head, 1)
    c = torch.arange(block, device=device).view(1, 1, 1, block)
    positions = g * stride + (i * head + j) * block + c
    return positions.permute(0, 2, 1, 3).reshape(units, repeat * block)


def ungrouped(t: Tensor, axis: int, groups: int) -> Tensor:
    """A grouped convolution's weight ``(out, in / groups, ...)`` as ``(out / groups, in,
    ...)``: axis 1 then holds every input channel in order, channel ``j * (in / groups) +
    i`` the entries ``i`` of output group ``j``'s filters (:func:`regrouped` undoes it)."""
    if axis != 1 or t.shape[0] % groups:
        raise ValueError(f"a grouped convolution's input channels are on axis 1, got {axis}")
    rest = t.shape[2:]
    split = t.reshape(groups, t.shape[0] // groups, t.shape[1], *rest)
    return split.transpose(0, 1).reshape(t.shape[0] // groups, groups * t.shape[1], *rest)


def regrouped(t: Tensor, groups: int) -> Tensor:
    """The inverse of :func:`ungrouped`: ``(out / groups, in, ...)`` back to ``(out, in /
    groups, ...)``."""
    rest = t.shape[2:]
    split = t.reshape(t.shape[0], groups, t.shape[1] // groups, *rest)
    return split.transpose(0, 1).reshape(groups * t.shape[0], t.shape[1] // groups, *rest)


def scale_units(
    t: Tensor,
    axis: int,
    factors: Tensor,
    block: int = 1,
    start: int = 0,
    *,
    repeat: int = 1,
    head: int = 1,
    stride: int = 0,
    groups: int = 1,
    in_place: bool = False,
) -> Tensor:
    """``t`` with unit ``k``'s slice along ``axis`` multiplied by ``factors[k]``; with
    ``in_place``, ``t`` itself is multiplied (a wide layer's new copy costs more than
    the product)."""
    if groups > 1:  # a grouped convolution's input channels (a new tensor: never in place)
        flat = ungrouped(t, axis, groups)
        done = scale_units(
            flat, axis, factors, block, start, repeat=repeat, head=head, stride=stride
        )
        return regrouped(done, groups)
    shape = [1] * t.ndim
    shape[axis] = -1
    factors = factors.to(device=t.device, dtype=t.dtype)
    total = t.shape[axis]
    if _simple(repeat, stride) and start == 0 and len(factors) * block == total:
        values = _expand(factors, block)
    else:
        positions = unit_positions(len(factors), block, repeat, head, stride, t.device)
        values = torch.ones(total, device=t.device, dtype=t.dtype)
        values[start + positions.reshape(-1)] = factors.repeat_interleave(repeat * block)
    return t.mul_(values.reshape(shape)) if in_place else t * values.reshape(shape)


def permute_units(
    t: Tensor,
    axis: int,
    perm: Tensor,
    block: int = 1,
    start: int = 0,
    *,
    repeat: int = 1,
    head: int = 1,
    stride: int = 0,
    groups: int = 1,
) -> Tensor:
    """``t`` with its units reordered along ``axis``: new unit ``k`` is old unit ``perm[k]``."""
    if groups > 1:
        flat = ungrouped(t, axis, groups)
        done = permute_units(
            flat, axis, perm, block, start, repeat=repeat, head=head, stride=stride
        )
        return regrouped(done, groups)
    total = t.shape[axis]
    if _simple(repeat, stride) and start == 0 and len(perm) * block == total:
        if block == 1:
            return t.index_select(axis, perm)
        # whole blocks moved at once (a flattened conv output: 49 contiguous numbers)
        blocks = t.reshape(*t.shape[:axis], len(perm), block, *t.shape[axis + 1 :])
        return blocks.index_select(axis, perm).reshape(t.shape)
    positions = unit_positions(len(perm), block, repeat, head, stride, perm.device) + start
    index = torch.arange(total, device=perm.device)
    index[positions.reshape(-1)] = positions[perm].reshape(-1)
    return t.index_select(axis, index)


def gather_units(
    t: Tensor,
    axis: int,
    units: int,
    block: int = 1,
    start: int = 0,
    *,
    repeat: int = 1,
    head: int = 1,
    stride: int = 0,
    groups: int = 1,
) -> Tensor:
    """``t`` with the units' axis first as ``[units, repeat * block, *other axes]``: unit
    k's entries of that axis together (in the order :func:`unit_positions` gives)."""
    if groups > 1:
        t = ungrouped(t, axis, groups)
    front = t.movedim(axis, 0)
    if _simple(repeat, stride):
        if start or units * block != front.shape[0]:
            front = front.narrow(0, start, units * block)
    else:
        positions = unit_positions(units, block, repeat, head, stride, t.device) + start
        front = front.index_select(0, positions.reshape(-1))
    return front.reshape(units, repeat * block, *front.shape[1:])


def unit_slices(
    t: Tensor,
    axis: int,
    units: int,
    block: int = 1,
    start: int = 0,
    *,
    repeat: int = 1,
    head: int = 1,
    stride: int = 0,
    groups: int = 1,
) -> Tensor:
    """``t`` as one row per unit along ``axis`` (a unit's block of entries and everything
    on the other axes): ``[units, -1]``."""
    gathered = gather_units(
        t, axis, units, block, start, repeat=repeat, head=head, stride=stride, groups=groups
    )
    return gathered.reshape(units, -1)


def unit_norms(weight: Tensor) -> Tensor:
    """L2 norm of each unit's incoming weights (rows of a linear weight, filters of a conv)."""
    norms: Tensor = torch.linalg.vector_norm(weight.reshape(weight.shape[0], -1), dim=1)
    return norms


def at_units(t: Tensor, producer: Producer, size: int | None) -> Tensor:
    """A tensor of one number per output of the producer's layer (its BatchNorm's mean,
    a gain) at the producer's ``size`` units (default: all of the layer's outputs)."""
    if size is None or (not producer.start and not producer.stride and size == t.shape[0]):
        return t
    return gather_units(t, 0, size, **layout_of(producer)).reshape(size)


def bn_gain(
    state: Mapping[str, Tensor], producer: Producer, size: int | None = None
) -> Tensor | None:
    """Per-unit factor gamma / sqrt(var + eps) of the producer's BatchNorm, or None without
    one; of its ``size`` units when they are a range of the layer's outputs (default: all)."""
    bn = producer.batchnorm
    if bn is None:
        return None
    gain: Tensor = state[bn.weight] / torch.sqrt(state[bn.running_var] + bn.eps)
    return at_units(gain, producer, size)


def scale_batchnorm_input(out: dict[str, Tensor], producer: Producer, factors: Tensor) -> None:
    """Scale each unit's BatchNorm input by ``factors`` (> 0), keeping the BN output exact.

    w, b and the running mean are multiplied by c_k, the running variance by c_k^2, and
    gamma_k by sqrt(c_k^2 var_k + eps) / (c_k sqrt(var_k + eps)): without that last factor
    the rescaling is exact only up to eps, an error that compounds with depth.
    """
    bn = producer.batchnorm
    assert bn is not None
    var = out[bn.running_var]
    c = factors.to(device=var.device, dtype=var.dtype)
    if len(c) != len(var) or producer.start or producer.stride:  # a range of the outputs
        c = scale_units(torch.ones_like(var), 0, c, **layout_of(producer))
    scaled = var * c.square()
    out[bn.weight] = out[bn.weight] * (torch.sqrt(scaled + bn.eps) / (c * torch.sqrt(var + bn.eps)))
    out[bn.running_var] = scaled
    out[bn.running_mean] = out[bn.running_mean] * c
    out[producer.weight] = scale_units(out[producer.weight], 0, c)
    if producer.bias is not None:
        out[producer.bias] = out[producer.bias] * c


def producer_rows(
    state: Mapping[str, Tensor], producer: Producer, effective: bool, size: int | None = None
) -> Tensor:
    """The producer's weight as one row per unit; with ``effective``, times its BN gain.

    ``size``: the number of units, when they are a part of the layer's outputs
    (from the producer's ``start``; default: all of them).
    """
    w = state[producer.weight]
    if size is not None and (producer.start or producer.stride or size != w.shape[0]):
        w = gather_units(w, 0, size, **layout_of(producer))
    rows: Tensor = w.reshape(w.shape[0], -1)
    gain = bn_gain(state, producer, size) if effective else None
    return rows if gain is None else rows * gain.unsqueeze(1)


def unit_vectors(state: Mapping[str, Tensor], group: UnitGroup, effective: bool = True) -> Tensor:
    """Each unit's incoming vector as a row: ``[size, fan_in]``.

    The concatenation of the unit's rows in every producer; with ``effective``
    (the default) a producer followed by BatchNorm contributes its effective
    weight gamma / sqrt(var + eps) * w (DESIGN §3 "Normalization", §3b).
    """
    rows = [producer_rows(state, p, effective, group.size) for p in group.producers]
    return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def split_rows(rows: Tensor, group: UnitGroup, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`unit_vectors` without gains: the producers' weights from their
    rows (of a producer whose units are a range of its layer's outputs, those rows)."""
    out: dict[str, Tensor] = {}
    offset = 0
    for p in group.producers:
        w = like[p.weight]
        width = w[0].numel() if w.shape[0] else 0
        out[p.weight] = rows[:, offset : offset + width].reshape(len(rows), *w.shape[1:])
        offset += width
    return out

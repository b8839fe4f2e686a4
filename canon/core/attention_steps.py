"""The walk's steps through multi-head attention, embeddings and fused projections
(DESIGN §3b "Attention").

A projection's output is split into heads by a view to ``(..., heads, d)``;
queries times keys (``q @ k.transpose(-2, -1)`` or inside
``F.scaled_dot_product_attention``) contract their head dimensions, so the
query and key spaces form one ``linear`` group (a query dimension times c,
its key dimension divided by c); the scores' softmax weights the values,
whose space forms a second ``linear`` group with the output projection's
columns. The two groups share the order of the heads (one ``link``): a head
moves as a block, its dimensions permuting within it. A fused projection's
output cut by ``split`` / ``chunk``, or viewed as ``(parts, heads, d)`` and
unbound (timm), gives each part its own space, with the fused layer's rows
from the part's offset as producer; torch's ``nn.MultiheadAttention`` is cut
the same way from its packed projection. A fused projection viewed into
heads first and then cut along each head's dimensions (GPT-NeoX's ``(heads,
3 * d)`` chunked, Persimmon's ``(heads, 3, d)`` picked) interleaves its parts
head by head: a part's producer is the layer's rows in runs of d, 3d apart. Whole heads of a
fused projection taken by ranges (Falcon's ``(heads + 2, d)`` view: ``[..., :-2, :]``,
``[..., [-2], :]``) are parts too; one key/value head is broadcast to every query
head; a (groups, heads per group + 2, d) view (Falcon-40B's) holds each key/value
group's query heads, key and value, its parts taken by ranges of slots. The batch may
merge into the heads (BLOOM's ``(batch * heads, tokens, d)`` for
``baddbmm`` and ``bmm``): every batch element's heads alike.
With grouped-query attention the key dimensions are the units, each one's
query rows (and each value dimension's output columns) repeated over the
query heads that share it. Rotary embeddings (whole or partial) and norms
over each head's dimensions pin the dimensions in their heads.
Queries and keys may be heads of several tensors joined along their dimensions (``cat``,
or ``copy_`` into the parts of an empty tensor): DeepSeek's latent attention joins each
query head's unrotated dimensions with its rotated ones, and each key head's unrotated
dimensions with one rotated key head that every query head shares. The one pair of parts
whose keys are heads of their own makes the attention's query/key group; the query parts
that meet the shared head ride along, their dimensions pinned, their heads linked to the
attention's, and the shared head stays in place.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import fx, nn

from canon.core.ops import Op, function_op, library_norm, linear, module_op, op_name, plain
from canon.core.spec import (
    CarriedAxis,
    Layout,
    OutgoingAxis,
    Producer,
    Tap,
    UnitGroup,
    layout_of,
)
from canon.core.unit_ranges import UnitRanges
from canon.core.walk_values import (
    ADD,
    CARVE,
    CAT,
    DIV,
    LAYERNORMS,
    MUL,
    NEW,
    PERMUTE,
    Attended,
    Fixed,
    Grouped,
    HeadParts,
    HeadRanges,
    Heads,
    JoinedHeads,
    Made,
    Param,
    Parts,
    Pieces,
    Scores,
    Sliced,
    Space,
    Spread,
    Stacked,
    Unfollowed,
    Units,
    Value,
    Woven,
    attribute,
    check_commutes,
    hidden_units,
    location,
    one_tensor,
    permuted_dims,
    pin_all,
    shape_of,
    spaces_in,
    unsupported,
)

__all__ = ["MATMUL", "AttentionSteps", "per_axis"]

MATMUL = {operator.matmul, torch.matmul, "matmul", torch.bmm, "bmm"}
_SOFTMAX = {F.softmax, torch.softmax, "softmax"}
_KEEP = {"contiguous", "clone", "float", "type_as", "to", F.dropout, "masked_fill", "masked_fill_"}
_RESHAPES = {
    "view", "reshape", torch.reshape, "flatten", torch.flatten, "unflatten", torch.unflatten
}  # fmt: skip
_WHERE = {torch.where, "where"}
_BADDBMM = {torch.baddbmm, "baddbmm"}
_EXPAND = {"expand", "expand_as", torch.broadcast_to, "broadcast_to"}
# a one-head tensor's steps (:meth:`AttentionSteps._single_heads`)
_ONE_HEAD_STEPS = (
    MUL | ADD | set(CAT) | _EXPAND | _RESHAPES | {operator.neg, torch.neg, "neg", operator.getitem}
)
# a rotary embedding through complex numbers: (..., d / 2, 2) pairs as (..., d / 2) complex
_COMPLEX = {torch.view_as_complex, torch.view_as_real}

_SUPPORTED = (
    "; canon supports multi-head attention whose queries, keys and values are linear "
    "projections split into heads by a view, as F.scaled_dot_product_attention(q, k, v) "
    "or softmax(q @ k.transpose(-2, -1) * scale) @ v, merged back by a transpose and a view"
)


def _over_dims(node: fx.Node, heads: Heads) -> bool:
    """Whether an ``F.normalize`` node normalizes over the heads' dimension axis."""
    dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else 1)
    return isinstance(dim, int) and dim % len(shape_of(node)) == heads.dim_axis


def _softmax_dim(node: fx.Node, module: nn.Module | None) -> int | None:
    """The axis a softmax node (a call of the function or method, or an ``nn.Softmax``)
    normalizes over; None where it is not told."""
    if isinstance(module, nn.Softmax):
        return module.dim
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    return dim if isinstance(dim, int) else None


def _differs_between_heads(terms: Sequence[fx.Node], head_axis: int, ndim: int) -> bool:
    """Whether a term that meets attention scores (laid out with heads on ``head_axis`` of
    ``ndim`` axes: added, or a mask) differs between heads: a per-head bias (ALiBi's
    slopes), which stays in place, so the heads may not move."""
    for term in terms:
        if not one_tensor(term):
            continue
        shape = shape_of(term)
        axis = head_axis - (ndim - len(shape))  # broadcast from the right
        if 0 <= axis < len(shape) and shape[axis] > 1:
            return True
    return False


def per_axis(index: object, ndim: int) -> tuple[int | slice, ...] | None:
    """An index of ``ndim`` axes (``x[..., 0, :]``) as one entry per axis, or None if it
    holds anything but numbers, slices and one Ellipsis."""
    found = index if isinstance(index, tuple) else (index,)
    if any(not isinstance(i, (int, slice)) and i is not Ellipsis for i in found):
        return None
    bounds = [b for i in found if isinstance(i, slice) for b in (i.start, i.stop, i.step)]
    if any(b is not None and not isinstance(b, int) for b in bounds):
        return None  # a bound computed in the graph (``x.shape[-1] // 2`` under torch.fx)
    if found.count(Ellipsis) > 1 or len(found) - found.count(Ellipsis) > ndim:
        return None
    if Ellipsis in found:
        at = found.index(Ellipsis)
        found = found[:at] + (slice(None),) * (ndim - len(found) + 1) + found[at + 1 :]
    entries = found + (slice(None),) * (ndim - len(found))
    return tuple(i for i in entries if i is not Ellipsis)


def _squeezed(
    before: Sequence[int], after: Sequence[int], value: Heads | Scores
) -> Heads | Scores | None:
    """``value`` after a view that only drops or adds axes of size 1 (its head and
    dimension axes hold more than one entry, so where they go is plain), or None."""
    kept = [a for a, n in enumerate(before) if n > 1]
    placed = [a for a, n in enumerate(after) if n > 1]
    if [before[a] for a in kept] != [after[a] for a in placed]:
        return None
    where = dict(zip(kept, placed, strict=True))
    if value.head_axis not in where:
        return None
    if isinstance(value, Scores):
        return replace(value, head_axis=where[value.head_axis])
    if value.dim_axis not in where:
        return None
    return replace(value, head_axis=where[value.head_axis], dim_axis=where[value.dim_axis])


def _batch_regrouped(
    before: Sequence[int], after: Sequence[int], value: Heads | Scores
) -> Heads | Scores | None:
    """``value`` after a view that regroups only the axes before its heads (and, for
    heads, their dimensions) and keeps the rest (Swin's scores viewed as (batch, windows,
    heads, queries, keys) to add each window's mask, then viewed back), or None."""
    first = value.head_axis if isinstance(value, Scores) else min(value.head_axis, value.dim_axis)
    kept = tuple(before[first:])
    if len(after) < len(kept) or tuple(after[len(after) - len(kept) :]) != kept:
        return None
    lead = len(after) - len(kept)
    if math.prod(before[:first]) != math.prod(after[:lead]):
        return None
    shift = lead - first
    if isinstance(value, Scores):
        return replace(value, head_axis=value.head_axis + shift)
    return replace(value, head_axis=value.head_axis + shift, dim_axis=value.dim_axis + shift)


def _head_axis_split(
    before: Sequence[int], after: Sequence[int], value: Heads | Scores
) -> tuple[int, int] | None:
    """``(outer, inner)`` when a view splits the head axis into two (Falcon's heads viewed
    as (heads, 3) or (groups, slots)), the dimensions right after it; else None."""
    if not isinstance(value, Heads) or value.dim_axis != value.head_axis + 1:
        return None
    a = value.head_axis
    if len(after) != len(before) + 1 or tuple(after[:a]) != tuple(before[:a]):
        return None
    if tuple(after[a + 2 :]) != tuple(before[a + 1 :]) or after[a] * after[a + 1] != before[a]:
        return None
    return (after[a], after[a + 1]) if min(after[a], after[a + 1]) > 1 else None


def _batch_merged(
    before: Sequence[int], after: Sequence[int], head_axis: int, heads: int
) -> int | None:
    """Where the heads are after a view that merges the batch axis into the head axis
    that follows it (``(batch, heads, ...)`` to ``(batch * heads, ...)``: each batch
    element's heads in a row, every head alike) or splits them again; None for another
    view. A head's place in the merged axis is its index modulo ``heads``, so moving
    heads moves them within every batch element alike."""
    if head_axis == 1 and before[1] == heads and tuple(after) == (before[0] * heads, *before[2:]):
        return 0
    if head_axis == 0 and len(after) > 1 and after[1] == heads:
        return 1 if (after[0] * heads, *after[2:]) == tuple(before) else None
    return None


def _as_range(index: object) -> object:
    """An index entry, a list of one integer (``x[..., [-2], :]``) as the range of that
    one element (which keeps its axis, as the list does)."""
    if isinstance(index, list) and len(index) == 1 and isinstance(index[0], int):
        return slice(index[0], index[0] + 1 or None)
    return index


def _shared(heads: Heads, count: int) -> Heads:
    """``heads`` as ``count`` query heads read them: one key/value head broadcast to every
    query head (multi-query attention with no repeat of its own) is that head repeated."""
    if heads.heads == 1 and heads.repeat == 1 and count > 1:
        return replace(heads, heads=count, repeat=count)
    return heads


def _in_pairs(node: fx.Node) -> bool:
    """Whether a reshape cuts its input's last axis into pairs: (..., d) to (..., d / 2, 2)."""
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node):
        return False
    before, after = shape_of(source), shape_of(node)
    return bool(before) and after == (*before[:-1], before[-1] // 2, 2)


def _heads_joined(
    parts: Sequence[tuple[fx.Node, Heads | JoinedHeads]], axis: int
) -> JoinedHeads | None:
    """Heads laid out alike joined along ``axis``, their dimension axis, each part keeping
    its space; None if they are not."""
    heads: list[Heads] = []
    widths: list[int] = []
    for n, v in parts:
        if isinstance(v, JoinedHeads):
            heads += v.parts
            widths += v.widths
        else:
            heads.append(v)
            widths.append(shape_of(n)[v.dim_axis])
    layout = {(h.head_axis, h.dim_axis, h.heads) for h in heads}
    if len(layout) != 1 or heads[0].dim_axis != axis:
        return None
    return JoinedHeads(tuple(heads), tuple(widths))


def _one_head(node: fx.Node, value: Value | None, transposed: bool = False) -> Value | None:
    """``value``, or as one head when it is a layer's outputs laid out as (batch, 1, tokens,
    d) (multi-query attention's single key/value head, GPT-BigCode's; a single head's
    queries, keys and values), or with ``transposed`` as (batch, 1, d, tokens) too (keys
    ready for ``q @ k``)."""
    if not isinstance(value, Units) or value.space.pinned or value.block != 1:
        return value
    shape = shape_of(node)
    axes = (len(shape) - 1, len(shape) - 2) if transposed else (len(shape) - 1,)
    if len(shape) >= 3 and value.axis in axes and shape[-3] == 1:
        return Heads(value.space.root(), len(shape) - 3, value.axis, 1)
    return value


def _flat_tap(space: Space) -> Tap | None:
    """A point where ``space``'s units are all read, each once, in order (the layer's own
    output), or None."""
    plain_taps = (
        t for t in space.taps.values() if t.block == 1 and not (t.start or t.stride or t.projection)
    )
    return next(plain_taps, None)


_Axis = TypeVar("_Axis", Producer, OutgoingAxis, Tap)


def _within_heads(axis: object, a: int, w: int, d: int) -> Layout | None:
    """Where dimensions ``a`` to ``a + w`` of every head of ``d`` sit along ``axis``
    (whose units, the heads' dimensions, are one run or runs of ``d``), or None."""
    at = layout_of(axis)
    if at["block"] != 1 or at["repeat"] != 1 or (at["stride"] and at["head"] != d):
        return None
    return Layout(
        block=1, start=at["start"] + a, repeat=1, head=w, stride=at["stride"] or d, groups=1
    )


def _split_pinned(qk: UnitGroup, q: Space, k: Space, d: int) -> tuple[UnitGroup, UnitGroup] | None:
    """``qk`` as two groups that share the heads' order, when a partial rotary embedding
    left the last dimensions of every head untouched: the turned ones pinned (only whole
    heads move), the passed ones free to permute within their head and to take a factor
    (``linear``). None where the layouts do not allow it."""
    every = frozenset(range(d))
    free = (q.free if q.heads_only else every) & (k.free if k.heads_only else every)
    low = min(free, default=d)
    plain = all(not t.projection and t.block == 1 for t in qk.taps)
    if not free or sorted(free) != list(range(low, d)) or qk.carried or not plain:
        return None

    def moved(axes: tuple[_Axis, ...], a: int, w: int) -> tuple[_Axis, ...] | None:
        layouts = [_within_heads(x, a, w, d) for x in axes]
        if any(at is None for at in layouts):
            return None
        return tuple(
            replace(x, start=at["start"], head=at["head"], stride=at["stride"])
            for x, at in zip(axes, layouts, strict=True)
            if at is not None
        )

    made: list[UnitGroup] = []
    for a, w, pinned in ((0, low, True), (low, d - low, False)):
        producers, outgoing = moved(qk.producers, a, w), moved(qk.outgoing, a, w)
        taps = moved(qk.taps, a, w)
        if producers is None or outgoing is None or taps is None:
            return None
        made.append(
            replace(
                qk,
                name=qk.name if pinned else f"{qk.name}:{a}",
                size=qk.size // d * w,
                symmetry="none" if pinned else "linear",
                producers=producers,
                outgoing=outgoing,
                taps=taps,
                heads_only=pinned,
            )
        )
    return made[0], made[1]


def _elementwise(op: Op | None) -> bool:
    return op is not None and op.kind == "elementwise"


def _joined(parts: Sequence[Sliced], woven: bool = False) -> Heads | Sliced | None:
    """Parts of every head's dimensions joined one after the other (or ``woven``: the
    first of each, then the second of each...): their heads if they hold each dimension
    once, or a part of them if a range; None otherwise. Whole heads come back pinned
    (any function of a head's dimensions the same for every head is kept by moving
    whole heads), except the dimensions that come back untouched to their own place
    (those a partial rotary embedding passes)."""
    if woven:
        dims = tuple(i for row in zip(*(p.dims for p in parts), strict=True) for i in row)
        untouched = [False] * len(dims)
    else:
        dims = tuple(i for p in parts for i in p.dims)
        untouched = [not p.turned for p in parts for _ in p.dims]
    low = min(dims, default=0)
    if not dims or sorted(dims) != list(range(low, low + len(dims))):
        return None
    first = parts[0]
    if len(dims) == first.width:
        free = {j for i, j in enumerate(dims) if j == i and untouched[i]}
        first.heads.space.pin(frozenset(free))
        return first.heads
    in_place = all(untouched) and dims == tuple(sorted(dims))
    return replace(first, dims=dims, turned=not in_place)


def _mixed_halves(a: Heads | Sliced, b: Heads | Sliced) -> bool:
    """Whether two head tensors are equal parts of the same heads' dimensions, each
    turned (multiplied by rotary angles): their sum rotates pairs of dimensions, pinned in
    their heads when the parts join (GPT-OSS's ``x1 * cos - x2 * sin``)."""
    return (
        isinstance(a, Sliced)
        and isinstance(b, Sliced)
        and a.turned
        and b.turned
        and _same_place(a.heads, b.heads)
        and len(a.dims) == len(b.dims)
        and a.width == b.width
    )


def _constant(value: object) -> bool:
    """Whether a walked value is moved by no symmetry: a parameter, a tensor computed from
    parameters and positions, or the network's input."""
    return isinstance(value, (Param, Fixed)) or (isinstance(value, Units) and value.space.pinned)


def _per_head_parameter(node: fx.Node, head_axis: int, heads: int) -> str | None:
    """The name of a parameter of one number per query head that ``node`` reads through a
    view putting them on the scores' head axis, then broadcasts alone (GPT-OSS's sinks:
    ``sinks.reshape(1, -1, 1, 1).expand(b, -1, t, -1)``); else None."""
    step, broadcast = node, True
    while step.op != "get_attr":
        name = op_name(step)
        source = step.args[0] if step.args else None
        if not isinstance(source, fx.Node):
            return None
        if name in ("expand", "expand_as", "to", "type_as", "contiguous") and broadcast:
            step = source
            continue
        shape = shape_of(step)
        laid = len(shape) > head_axis and shape[head_axis] == heads
        if name not in ("reshape", "view") or not laid or math.prod(shape) != heads:
            return None
        step, broadcast = source, False
    held = shape_of(step)
    return str(step.target) if tuple(held) == (heads,) and not broadcast else None


def _row_shift(node: fx.Node, scores: fx.Node) -> bool:
    """Whether ``node`` is the largest of ``scores`` along their keys, per query (``.max(-1,
    keepdim=True).values``, ``amax``): computed from the scores, it moves with their heads."""
    if op_name(node) in ("getitem", "getattr") and len(node.args) == 2:
        picked, node = node.args[1], node.args[0]  # type: ignore[assignment]
        if picked not in (0, "values") or not isinstance(node, fx.Node):
            return False
    return op_name(node) in ("max", "amax") and bool(node.args) and node.args[0] is scores


def _same_place(a: Heads | Sliced, b: Heads | Sliced) -> bool:
    """Whether two head tensors hold the same dimensions of the same space's heads, laid
    out alike (the two terms of a rotary embedding's sum; pinned, so their order within a
    head is any, the same for every head)."""
    if isinstance(a, Sliced) and isinstance(b, Sliced):
        return _same_place(a.heads, b.heads) and sorted(a.dims) == sorted(b.dims)
    if isinstance(a, Heads) and isinstance(b, Heads):
        return a.space.root() is b.space.root() and replace(a, space=b.space) == b
    return False


@dataclass(frozen=True)
class _Attention:
    """One attention call: the spaces of its queries, keys and values, and its heads."""

    query: Space
    key: Space
    value: Space
    heads: int  # of the keys and values
    where: str
    repeat: int = 1  # query heads per key/value head (grouped-query attention)
    sink: str | None = None  # a parameter of one sink per query head (GPT-OSS's)
    # query dimensions against one key head that every query head shares (DeepSeek's
    # rotated ones): pinned within their heads, which move with the attention's
    riders: tuple[Space, ...] = ()


class AttentionSteps(UnitRanges):
    """The :class:`~canon.core.unit_spaces.Walker`'s steps for attention, embeddings and
    fused projections (a mixin: it shares the walker's ``values`` and ``order``; a cut
    that is no fused projection's gives ranges of units, :class:`UnitRanges`)."""

    gm: fx.GraphModule
    values: dict[fx.Node, Value]
    order: dict[fx.Node, int]
    attentions: list[_Attention]
    parts: dict[str, list[tuple[frozenset[int], Space]]]  # by layer: the parts cut so far
    tied: dict[str, str]  # a tied tensor's other names: the name the state dict keeps
    tables: dict[str, Space]  # by table: the space an embedding's lookup started
    _join: Callable[[Space, Space, fx.Node], None]  # the walker's: two spaces become one
    fills: dict[fx.Node, list[tuple[int, int, fx.Node]]]  # a new tensor's parts written so far

    # -- where they start ----------------------------------------------------------

    def _embedding(self, node: fx.Node, path: str, width: int) -> Units:
        """A lookup table (the ``weight`` at ``path``, ``width`` columns) starts a space:
        its columns are the units (carried, axis 1). A table tied to another (T5's encoder
        reads the shared one by its own name) is carried by the name the state dict keeps."""
        space = Space(size=width, created=self.order[node], origin=path)
        name = self.tied.get(f"{path}.weight", f"{path}.weight")
        space.carried.append(CarriedAxis(name, 1))
        self.tables.setdefault(name, space)
        space.ops.append((self.order[node], plain("embedding")))
        return Units(space, len(shape_of(node)) - 1)

    def _split_heads(self, node: fx.Node, source: fx.Node, units: Units) -> Heads | None:
        """A view that splits the unit axis into (heads, d), or None if it does not."""
        in_shape, out_shape = shape_of(source), shape_of(node)
        if units.block != 1 or units.space.pinned:
            return None
        before = math.prod(in_shape[: units.axis])
        width = in_shape[units.axis]
        for j in range(len(out_shape) - 1):
            heads, d = out_shape[j], out_shape[j + 1]
            if math.prod(out_shape[:j]) == before and heads * d == width and min(heads, d) > 1:
                space = units.space.root()
                space.taps.setdefault(source.name, Tap(source.name, units.axis))
                return Heads(space, j, j + 1, heads)
        return None

    def _stack_heads(self, node: fx.Node, source: fx.Node, units: Units) -> Stacked | None:
        """A view of one layer's outputs as (parts, heads, d): a fused query-key-value
        projection split into heads at once, or None if the view is not that."""
        in_shape, out_shape = shape_of(source), shape_of(node)
        if units.block != 1 or units.space.pinned or units.layer is None:
            return None
        before = math.prod(in_shape[: units.axis])
        width = in_shape[units.axis]
        for j in range(len(out_shape) - 2):
            parts, heads, d = out_shape[j : j + 3]
            if math.prod(out_shape[:j]) == before and parts * heads * d == width and parts > 1:
                space = units.space.root()
                if len(space.producers) != 1:
                    return None
                space.carved = True
                return Stacked(space, j, j + 1, j + 2, parts, heads, source.name)
        return None

    def _stacked_step(self, node: fx.Node, stacked: Stacked) -> Value:
        """Permutes of a (parts, heads, d) view, ``unbind`` over its parts, and a part."""
        target, at, name = node.target, location(node), op_name(node)
        source = node.args[0]
        tupled = stacked.unbound or stacked.picked
        ndim = 0 if tupled or not isinstance(source, fx.Node) else len(shape_of(source))
        if target in PERMUTE and not stacked.unbound:
            dims = permuted_dims(node, ndim)
            return replace(
                stacked,
                part_axis=dims.index(stacked.part_axis),
                head_axis=dims.index(stacked.head_axis),
                dim_axis=dims.index(stacked.dim_axis),
            )
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        unbinds = target in ("unbind", torch.unbind) and not stacked.unbound
        if unbinds and isinstance(dim, int) and dim % ndim == stacked.part_axis:
            return replace(stacked, unbound=True)
        if unbinds and isinstance(dim, int) and dim % ndim == stacked.head_axis:
            return replace(stacked, picked=True)
        index = node.args[1] if len(node.args) > 1 else None
        if target is operator.getitem and isinstance(index, int) and stacked.picked:
            return self._stacked_pick(node, replace(stacked, picked=False), index % stacked.heads)
        picks = stacked.unbound or stacked.part_axis == 0
        if target is operator.getitem and isinstance(index, int) and picks:
            return self._stacked_part(node, stacked, index % stacked.parts)
        listed = tuple(map(_as_range, index if isinstance(index, tuple) else (index,)))
        entries = per_axis(listed, ndim) if target is operator.getitem and ndim else None
        numbers = [(a, i) for a, i in enumerate(entries or ()) if isinstance(i, int)]
        whole = all(i == slice(None) for i in entries or () if isinstance(i, slice))
        if len(numbers) == 1 and numbers[0][0] == stacked.head_axis and whole:
            return self._stacked_pick(node, stacked, numbers[0][1] % stacked.heads)
        ranges = [
            (a, i.indices(stacked.heads))
            for a, i in enumerate(entries or ())
            if isinstance(i, slice) and i != slice(None)
        ]
        adjacent = stacked.part_axis + 1 == stacked.head_axis == stacked.dim_axis - 1
        if not numbers and len(ranges) == 1 and ranges[0][0] == stacked.head_axis and adjacent:
            first, stop, step = ranges[0][1]
            if step == 1 and stop > first:
                return self._stacked_slots(node, stacked, first, stop)
        raise unsupported(
            f"op `{name}` in {at} on a fused projection's (parts, heads, d) view" + _SUPPORTED,
            name,
            at,
        )

    def _stacked_part(self, node: fx.Node, stacked: Stacked, index: int) -> Heads:
        """Part ``index`` of a (parts, heads, d) view: its own space, split into heads."""
        made = stacked.space.producers[0]
        size = stacked.space.size // stacked.parts
        offset = made.start + index * size
        space = self._part_space(node, made, size, offset)
        # activation matching reads the part where the layer's output is flat (units last)
        space.taps[f"{stacked.source}@{offset}"] = Tap(stacked.source, -1, 1, offset)

        def shifted(a: int) -> int:
            return a - (a > stacked.part_axis)

        return Heads(space, shifted(stacked.head_axis), shifted(stacked.dim_axis), stacked.heads)

    def _stacked_pick(self, node: fx.Node, stacked: Stacked, index: int) -> Heads:
        """``x[..., index, :]`` of a (heads, parts, d) view (Persimmon's
        ``view(b, t, heads, 3, d)``, read as a :class:`Stacked` with its axes' roles
        swapped): part ``index`` of every head, interleaved with the others."""
        d = stacked.space.size // (stacked.parts * stacked.heads)
        space = self._interleaved_part(
            node, stacked.space, stacked.parts, stacked.heads * d, index * d, d, stacked.source
        )

        def shifted(a: int) -> int:
            return a - (a > stacked.head_axis)

        return Heads(space, shifted(stacked.part_axis), shifted(stacked.dim_axis), stacked.parts)

    def _stacked_slots(
        self, node: fx.Node, stacked: Stacked, first: int, stop: int
    ) -> Grouped | Spread:
        """``qkv[:, :, :, a:b]`` of a (groups, slots, d) view (Falcon's newer layout: each
        key/value group's query heads, then its key head and its value head): slots ``a``
        to ``b`` of every group, interleaved with the other slots. Several slots are query
        heads grouped by the key/value head they share; one slot is that key or value
        head, which the group's query heads share (broadcast to them next)."""
        d = stacked.space.size // (stacked.parts * stacked.heads)
        count = stop - first
        space = self._interleaved_part(
            node, stacked.space, stacked.parts, stacked.heads * d, first * d, count * d,
            stacked.source,
        )  # fmt: skip
        groups, slots, dims = stacked.part_axis, stacked.head_axis, stacked.dim_axis
        if count == 1:
            return Spread(Heads(space, groups, dims, stacked.parts), slots)
        return Grouped(space, groups, slots, dims, stacked.parts, count)

    def _merge_groups(self, node: fx.Node, grouped: Grouped) -> Heads:
        """The view that merges grouped heads' two axes into one: every group's heads in a
        row."""
        source = node.args[0]
        assert isinstance(source, fx.Node)
        before, after = shape_of(source), shape_of(node)
        axis = grouped.group_axis
        merged = (*before[:axis], before[axis] * before[axis + 1], *before[axis + 2 :])
        if node.target not in _RESHAPES or after != merged:
            at, name = location(node), op_name(node)
            raise unsupported(
                f"op `{name}` in {at} on query heads grouped by their key/value head; canon "
                "follows the view that merges the two axes" + _SUPPORTED,
                name,
                at,
            )
        heads = grouped.groups * grouped.per
        return Heads(grouped.space, axis, grouped.dim_axis - 1, heads)

    def _part_space(
        self, node: fx.Node, made: Made, size: int, start: int, head: int = 1, stride: int = 0
    ) -> Space:
        """A space of ``size`` units made by ``made``'s layer from its row ``start`` on
        (in runs of ``head`` rows ``stride`` apart, with a ``stride``): the same space
        for the same rows taken twice; rows shared with another part are refused (each
        part permutes its rows on its own)."""
        runs = range(0, size, head) if stride else [0]
        width = head if stride else size
        rows = frozenset(start + (r // head) * stride + j for r in runs for j in range(width))
        cut = self.parts.setdefault(made.path, [])
        for taken, space in cut:
            if taken == rows and space.size == size:
                return space.root()
            if taken & rows:
                raise unsupported(
                    f"two parts of the outputs of `{made.path}` share rows",
                    op_name(node),
                    location(node),
                )
        bias, bias_start = made.bias, made.bias_start
        if made.bias_parts:  # the part of a joined bias that these rows add to
            found = [p for p in made.bias_parts if p[:2] == (start, size)]
            if stride or not found:
                raise unsupported(
                    f"the bias of `{made.path}` is joined from parts that are not the parts "
                    "its outputs are cut into",
                    op_name(node),
                    location(node),
                )
            bias, bias_start = found[0][2], 0 if found[0][2] is not None else None
        origin = f"{made.path}@{start}" if start else made.path
        space = Space(size=size, created=self.order[node], origin=origin)
        space.producers.append(
            replace(
                made,
                start=start,
                head=head,
                stride=stride,
                bias=bias,
                bias_start=bias_start,
                bias_parts=(),
            )
        )
        cut.append((rows, space))
        return space

    def _interleaved_part(
        self,
        node: fx.Node,
        fused: Space,
        heads: int,
        width: int,
        offset: int,
        d: int,
        flat: str,
        axis: int = -1,
    ) -> Space:
        """The ``d`` dimensions from ``offset`` of each of ``heads`` heads of ``width``
        (a fused projection whose rows interleave queries, keys and values head by head,
        held flat at node ``flat``, on ``axis``): a space of its own, made by the layer's
        rows in runs of ``d``, ``width`` apart."""
        made = fused.root().producers[0]
        if made.start or made.stride:
            raise unsupported(
                f"the outputs of `{made.path}` are cut into parts twice",
                "getitem",
                location(node),
            )
        space = self._part_space(node, made, heads * d, offset, head=d, stride=width)
        space.taps[f"{flat}@{offset}"] = Tap(flat, axis, 1, offset, head=d, stride=width)
        return space

    def _carve_heads(self, node: fx.Node, source: fx.Node, heads: Heads) -> HeadParts | HeadRanges:
        """``chunk`` / ``split`` of every head's dimensions (GPT-NeoX's fused projection
        viewed as (heads, 3 * d) and chunked into queries, keys and values; or the halves
        a rotary embedding turns, each part multiplied by angles: GPT-OSS's), or of the
        heads into ranges of whole heads (Falcon's ``split([heads, 1, 1], dim=-2)``)."""
        at, name = location(node), op_name(node)
        space = heads.space.root()
        shape = shape_of(source)
        metas = node.meta.get("tensor_meta")
        shapes = [tuple(m.shape) for m in metas] if isinstance(metas, (tuple, list)) else []
        axis = heads.dim_axis
        along = bool(shapes) and all(
            s[:axis] == shape[:axis] and s[axis + 1 :] == shape[axis + 1 :] for s in shapes
        )
        if along and self._turned_alone(node):
            return HeadParts(heads, tuple(s[axis] for s in shapes), halves=True)
        across = heads.head_axis
        if shapes and all(
            s[:across] == shape[:across] and s[across + 1 :] == shape[across + 1 :] for s in shapes
        ):  # whole heads in ranges
            if not self._fresh(heads):
                raise unsupported(
                    f"op `{name}` in {at} cuts attention heads that are not one layer's "
                    "outputs viewed into heads" + _SUPPORTED,
                    name,
                    at,
                )
            return HeadRanges(heads, tuple(s[across] for s in shapes))
        fused = len(space.producers) == 1 and not space.carved and not space.heads_only
        if not (along and fused and heads.repeat == 1 and _flat_tap(space) is not None):
            raise unsupported(
                f"op `{name}` in {at} cuts attention heads into several tensors; canon "
                "follows one layer's heads cut along their dimensions into queries, keys "
                "and values (a fused projection)" + _SUPPORTED,
                name,
                at,
            )
        space.carved = True
        return HeadParts(heads, tuple(s[axis] for s in shapes))

    def _sinks(
        self, node: fx.Node, source: fx.Node, scores: Scores, inputs: list[tuple[fx.Node, Value]]
    ) -> Value | None:
        """The steps of attention sinks (GPT-OSS's): per-head constants joined after the
        keys (``cat((scores, sinks), dim=-1)``), the scores' largest entry per query taken
        off (``x - x.max(-1, keepdim=True).values``: moved by nothing, so the heads stay in
        place), the sinks' columns dropped after the softmax (``probs[..., :-1]``); None for
        any other op on scores."""
        target, ndim = node.target, len(shape_of(source))
        keys = ndim - 1
        if target in CAT:
            listed = node.args[0] if node.args else node.kwargs.get("tensors")
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if not isinstance(listed, (list, tuple)) or not listed or listed[0] is not source:
                return None
            others = [n for n in listed[1:] if isinstance(n, fx.Node)]
            if (
                not isinstance(dim, int)
                or dim % ndim != keys
                or len(others) != len(listed) - 1
                or not all(_constant(self.values.get(n)) for n in others)
            ):
                return None
            extra = sum(shape_of(n)[-1] for n in others)
            sink = None
            if extra == 1 and not scores.sinks and scores.sink is None:
                sink = _per_head_parameter(others[0], scores.head_axis, scores.heads)
                if sink is not None and not isinstance(attribute(self.gm, sink), nn.Parameter):
                    sink = None  # a buffer's or a plain tensor's: it stays, and so do the heads
            if sink is None:  # constants that do not move with the heads keep them in place
                scores.query.root().heads_fixed = scores.key.root().heads_fixed = True
            return replace(scores, sinks=scores.sinks + extra, sink=sink or scores.sink)
        if target in ("max", torch.max, "amax", torch.amax) and len(inputs) == 1:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
            if not isinstance(dim, int) or dim % ndim != keys:
                return None
            # the largest score of each query: a shift the softmax ignores, and one that
            # moves with the heads (:func:`_row_shift`)
            return Fixed(())
        if target is operator.getitem and len(inputs) == 1 and scores.sinks:
            index = per_axis(node.args[1], ndim)
            width = shape_of(source)[keys]
            if index is None or any(i != slice(None) for i in index[:keys]):
                return None
            kept = index[keys]
            if isinstance(kept, slice) and kept.indices(width) == (0, width - scores.sinks, 1):
                return replace(scores, sinks=0)
        return None

    def _turned_alone(self, node: fx.Node) -> bool:
        """Whether every part a ``chunk`` of head dimensions gives is only multiplied by
        constants (rotary angles: computed from positions, or buffers): the halves of a
        rotary embedding, not the parts of a fused projection."""
        picks = list(node.users)
        uses = [use for pick in picks for use in pick.users]
        return bool(uses) and all(
            pick.target is operator.getitem for pick in picks
        ) and all(
            use.target in MUL
            and any(
                isinstance(other, fx.Node) and _constant(self.values.get(other))
                for other in use.args
                if other not in picks
            )
            for use in uses
        )  # fmt: skip

    def _head_part(self, node: fx.Node, parts: HeadParts) -> Heads | Sliced:
        """Part ``i`` of every head (queries, keys or values of a fused projection whose
        rows interleave them head by head; or a half a rotary embedding turns)."""
        index = node.args[1]
        if not isinstance(index, int):
            raise unsupported(f"cannot tell which part `{node.name}` takes", "getitem", node.name)
        index %= len(parts.sizes)
        if parts.halves:
            first, width = sum(parts.sizes[:index]), sum(parts.sizes)
            return Sliced(parts.heads, tuple(range(first, first + parts.sizes[index])), width)
        heads = parts.heads
        fused = heads.space.root()
        flat = _flat_tap(fused)
        assert flat is not None  # checked by _carve_heads
        offset, width = sum(parts.sizes[:index]), sum(parts.sizes)
        space = self._interleaved_part(
            node, fused, heads.heads, width, offset, parts.sizes[index], flat.node, flat.axis
        )
        return replace(heads, space=space)

    def _head_norm(self, node: fx.Node, module: nn.Module, source: fx.Node, heads: Heads) -> Heads:
        """A norm over each head's dimensions, the same for every head (Qwen3's and
        Persimmon's query/key norms): its weights index the dimensions, which it pins
        in their heads; whole heads still permute."""
        path, at = str(node.target), location(node)
        shape = shape_of(source)
        d = shape[heads.dim_axis]
        weight = module.state_dict().get("weight")
        last = heads.dim_axis == len(shape) - 1
        sized = weight is None or tuple(weight.shape) == (d,)
        torch_norm = isinstance(module, LAYERNORMS)
        if torch_norm and tuple(getattr(module, "normalized_shape", ())) != (d,):
            sized = False
        if not (last and sized and shape_of(node) == shape):
            raise unsupported(
                f"norm layer `{path}` in {at} reads attention heads but does not normalize "
                "each head's dimensions alone (its input's last axis)" + _SUPPORTED,
                type(module).__name__,
                path,
            )
        if not torch_norm:  # known by its class name only: run it once
            check_commutes(module, path, shape, heads.head_axis, parameters=False)
        heads.space.pin()
        return heads

    def _carve(self, node: fx.Node, source: fx.Node, units: Units) -> Parts | Pieces:
        """``split`` / ``chunk`` along the unit axis: of a layer's own outputs, its parts
        (a fused projection: each part's rows its producer); of any other hidden units,
        ranges of them (:meth:`~canon.core.unit_ranges.UnitRanges._pieces`)."""
        metas = node.meta["tensor_meta"]
        in_shape = shape_of(source)
        sizes = tuple(int(m.shape[units.axis]) for m in metas)
        space = units.space.root()
        same = all(
            tuple(m.shape)[: units.axis] == in_shape[: units.axis]
            and tuple(m.shape)[units.axis + 1 :] == in_shape[units.axis + 1 :]
            for m in metas
        )
        fused = len(space.producers) == 1 and units.layer is not None and units.block == 1
        # a layer's outputs also read whole (a residual stream right after its first
        # layer) are cut into ranges, which the whole's other readers move with
        if not (same and fused and len(source.users) == 1):
            return self._pieces(node, source, units)
        space.carved = True
        return Parts(space, units.axis, sizes)

    def _part(self, node: fx.Node, parts: Parts) -> Units:
        """Part ``i`` of a carved layer output: a space of its own, the layer's rows from
        the part's offset its producer."""
        index = node.args[1]
        if not isinstance(index, int):
            raise unsupported(f"cannot tell which part `{node.name}` takes", "getitem", node.name)
        index %= len(parts.sizes)
        made = parts.space.producers[0]
        offset = made.start + sum(parts.sizes[:index])
        space = self._part_space(node, made, parts.sizes[index], offset)
        space.taps[node.name] = Tap(node.name, parts.axis)
        return Units(space, parts.axis)

    def _multihead(
        self, node: fx.Node, module: nn.MultiheadAttention, inputs: list[tuple[fx.Node, Value]]
    ) -> Attended:
        """torch's ``nn.MultiheadAttention`` as self-attention on one hidden tensor: its
        packed input projection cut into queries, keys and values, its output projection
        starting a new space."""
        path, at = str(node.target), location(node)
        given = list(node.args[:3]) + [node.kwargs.get(k) for k in ("query", "key", "value")]
        sources = [a for a in given if isinstance(a, fx.Node)]
        source = sources[0] if len(sources) == 3 and len(set(sources)) == 1 else None
        value = self.values.get(source) if source is not None else None
        fits = (
            source is not None
            and isinstance(value, Units)
            and not value.space.pinned
            and value.block == 1
            and value.axis == len(shape_of(source)) - 1
            and module.batch_first
            and module._qkv_same_embed_dim
            and module.bias_k is None
            and not module.add_zero_attn
        )
        if not fits:
            raise unsupported(
                f"nn.MultiheadAttention `{path}` is not self-attention on one batch-first "
                "tensor with one packed input projection (canon supports attn(x, x, x) with "
                "batch_first=True, no bias_k/bias_v, no add_zero_attn)",
                "MultiheadAttention",
                path,
            )
        assert isinstance(value, Units) and source is not None
        for name, arg in node.kwargs.items():
            mask = self.values.get(arg) if isinstance(arg, fx.Node) else None
            if isinstance(mask, Units) and not mask.space.pinned:
                raise unsupported(
                    f"the `{name}` of `{path}` depends on hidden units", "MultiheadAttention", at
                )
        order, width = self.order[node], module.embed_dim
        stream = value.space.root()
        stream.outgoing.append((order, OutgoingAxis(f"{path}.in_proj_weight", 1)))
        stream.taps.setdefault(source.name, Tap(source.name, value.axis))
        bias = f"{path}.in_proj_bias" if module.in_proj_bias is not None else None
        made = Made(order, path, f"{path}.in_proj_weight", bias)
        q, k, v = (self._part_space(node, made, width, i * width) for i in range(3))
        for space in (q, k, v):
            start = space.producers[0].start
            space.taps[f"{path}@{start}"] = Tap(
                source.name, -1, 1, start, made.weight, made.bias or ""
            )
        self._record(q, k, v, module.num_heads, node)
        out = f"{path}.out_proj"
        v.outgoing.append((order, OutgoingAxis(f"{out}.weight", 1)))
        result = Space(size=width, created=order, origin=out)
        result.producers.append(
            Made(
                order,
                out,
                f"{out}.weight",
                f"{out}.bias" if module.out_proj.bias is not None else None,
            )
        )
        return Attended(Units(result, value.axis))

    # -- through attention -----------------------------------------------------------

    def _attention_step(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Value:
        """Any op that reads heads, scores or parts."""
        name, at, target = op_name(node), location(node), node.target
        attended = [v for _, v in inputs if isinstance(v, Attended)]
        if attended and target is operator.getitem and node.args[1] == 0:
            return attended[0].output
        if attended:
            raise unsupported(
                f"op `{name}` in {at} reads nn.MultiheadAttention's attention weights; canon "
                "supports its output (`attn(x, x, x)[0]`)",
                name,
                at,
            )
        if any(isinstance(v, JoinedHeads) for _, v in inputs):
            return self._joined_heads_step(node, inputs)
        ranges = [v for _, v in inputs if isinstance(v, HeadRanges)]
        if ranges and target is operator.getitem and len(inputs) == 1:
            index = node.args[1]
            if not isinstance(index, int):
                raise unsupported(f"cannot tell which part `{node.name}` takes", name, at)
            sizes = ranges[0].sizes
            index %= len(sizes)
            first = sum(sizes[:index])
            return self._whole_heads(node, ranges[0].heads, first, first + sizes[index])
        if ranges:
            raise unsupported(f"op `{name}` in {at} reads a tuple of parts", name, at)
        carved = [v for _, v in inputs if isinstance(v, HeadParts)]
        if carved and target is operator.getitem and len(inputs) == 1:
            return self._head_part(node, carved[0])
        if carved:
            raise unsupported(f"op `{name}` in {at} reads a tuple of parts", name, at)
        grouped = [v for _, v in inputs if isinstance(v, Grouped)]
        if grouped and len(inputs) == 1:
            return self._merge_groups(node, grouped[0])
        if grouped:
            raise unsupported(f"op `{name}` in {at} mixes grouped heads", name, at)
        stacked = [v for _, v in inputs if isinstance(v, Stacked)]
        if stacked and len(inputs) == 1:
            return self._stacked_step(node, stacked[0])
        if stacked:
            raise unsupported(f"op `{name}` in {at} mixes a fused projection's parts", name, at)
        parts = [v for _, v in inputs if isinstance(v, Parts)]
        if parts:
            if target is operator.getitem and len(inputs) == 1:
                return self._part(node, parts[0])
            raise unsupported(f"op `{name}` in {at} reads a tuple of parts", name, at)
        spread = [v for _, v in inputs if isinstance(v, Spread)]
        if spread and len(inputs) == 1:
            return self._spread_step(node, spread[0])
        if spread:
            raise unsupported(f"op `{name}` in {at} mixes repeated heads", name, at)
        if target is F.scaled_dot_product_attention:
            return self._sdpa(node, inputs)
        if target in MATMUL:
            return self._matmul(node, node.args[:2])
        if target in _BADDBMM:
            return self._baddbmm(node)
        repeated = self._repeat_heads(node, inputs)
        if repeated is not None:
            return repeated
        taken = self._head_range(node, inputs)
        if taken is not None:
            return taken
        one = self._pinned_head(node, inputs)
        if one is not None:
            return one
        rotated = self._rotary(node, inputs)
        if rotated is not None:
            return rotated
        gated = self._head_gate(node, inputs)
        if gated is not None:
            return gated
        if hidden_units(inputs):
            raise unsupported(
                f"op `{name}` in {at} combines attention heads with hidden units" + _SUPPORTED,
                name,
                at,
            )
        found = [v for _, v in inputs if isinstance(v, (Heads, Scores))]
        split = [v for v in found if isinstance(v, Heads)]
        layouts = {(v.head_axis, v.dim_axis, v.heads, v.repeat) for v in split}
        if len(split) == len(inputs) == 2 and len(layouts) == 1 and target in ADD | MUL:
            # two tensors split alike into heads, added or multiplied: their units join
            self._join(split[0].space, split[1].space, node)
            return replace(split[0], space=split[0].space.root())
        if target in CAT and len(split) == len(inputs) > 1:
            joined = self._join_heads(node, [(n, v) for n, v in inputs if isinstance(v, Heads)])
            if joined is not None:
                return joined
        if len(found) != 1:
            raise unsupported(f"op `{name}` in {at} combines two attention tensors", name, at)
        value = found[0]
        source = next(n for n, v in inputs if v is value)
        module = self._module_of(node)
        if target in PERMUTE:
            return self._permute_heads(node, source, value)
        if target in _RESHAPES:
            return self._reshape_heads(node, source, value)
        if isinstance(value, Heads) and target in CARVE:
            return self._carve_heads(node, source, value)
        if (
            isinstance(value, Heads)
            and module is not None
            and (isinstance(module, LAYERNORMS) or library_norm(module))
        ):
            return self._head_norm(node, module, source, value)
        if isinstance(value, Heads) and target is F.normalize and _over_dims(node, value):
            # each head's dimensions scaled to unit length (Swin V2's cosine attention): it
            # commutes with permuting them, not with factors
            value.space.root().ops.append((self.order[node], plain("norm")))
            return value
        if isinstance(value, Scores):
            sunk = self._sinks(node, source, value, inputs)
            if sunk is not None:
                return sunk
        if not one_tensor(node):
            raise unsupported(
                f"op `{name}` in {at} cuts attention heads into several tensors; canon "
                "follows heads kept whole (a fused projection split into queries, keys and "
                "values before its view into heads, not after)",
                name,
                at,
            )
        keeps = shape_of(node) == shape_of(source)
        if keeps and (target in _KEEP or isinstance(module, (nn.Dropout, nn.Identity))):
            return value
        if keeps and (target in MUL or target in DIV) and len(inputs) == 1:
            if isinstance(value, Heads):  # a scalar factor: linear in every unit
                value.space.root().ops.append((self.order[node], linear("scale")))
            return value
        softmax = target in _SOFTMAX or isinstance(module, nn.Softmax)
        if keeps and isinstance(value, Scores) and softmax:
            dim = _softmax_dim(node, module)
            if dim is not None and dim % len(shape_of(node)) != value.head_axis:
                return value  # softmax over keys: per head
        across = self._across_parts(node, source, value, module) if len(inputs) == 1 else None
        if across is not None:
            return across
        op = function_op(node) if module is None else module_op(module)
        if keeps and isinstance(value, Scores) and len(inputs) == 1 and _elementwise(op):
            return value  # the same function of every score (Gemma 2's tanh soft-capping)
        scaled = target in MUL or target in DIV
        if keeps and isinstance(value, Scores) and (target in ADD or target in _WHERE or scaled):
            others = [
                a
                for a in node.args
                if isinstance(a, fx.Node) and a is not source and not _row_shift(a, source)
            ]
            if _differs_between_heads(others, value.head_axis, len(shape_of(node))):
                value.query.root().heads_fixed = value.key.root().heads_fixed = True
            return value  # a mask, added or chosen by a condition
        raise unsupported(
            f"unsupported op `{name}` on attention heads in {at}" + _SUPPORTED, name, at
        )

    def _across_parts(
        self, node: fx.Node, source: fx.Node, value: Heads | Scores, module: nn.Module | None
    ) -> Units | Heads | None:
        """A sum or mean (or a softmax) over the head axis of a layer's units viewed as
        parts that no attention reads (ResNeSt's split attention: the radix parts summed,
        their weights a softmax across the parts): unit j of every part meets unit j of
        the others, so the parts are ranges that move alike, one space; None for any
        other op."""
        if not isinstance(value, Heads) or value.repeat != 1:
            return None
        ndim = len(shape_of(source))
        target = node.target
        softmax = target in _SOFTMAX or isinstance(module, nn.Softmax)
        dim: object
        if softmax:
            dim = _softmax_dim(node, module)
        elif target in ("sum", torch.sum, "mean", torch.mean):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        else:
            return None
        if not isinstance(dim, int) or dim % ndim != value.head_axis:
            return None
        space = value.space.root()
        if id(space) in self._attention_spaces() or value.dim_axis < value.head_axis:
            return None
        d = space.size // value.heads
        bounds = tuple(range(0, space.size + 1, d))
        parts = [self._cut(node, space, a, a + d, bounds) for a in bounds[:-1]]
        for part in parts[1:]:
            self._join(parts[0], part, node)
        if softmax:
            space.root().ops.append((self.order[node], plain("softmax across parts")))
            return replace(value, space=space.root())
        kept = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if kept:
            return None  # the parts' axis kept as one: not followed
        parts[0].root().ops.append((self.order[node], linear("sum across parts")))
        return Units(parts[0].root(), value.dim_axis - 1)

    # -- whole heads of a fused projection ------------------------------------------------

    def _head_range(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Heads | None:
        """``x[..., a:b, :]`` or ``x[..., [i], :]`` of one layer's outputs viewed into heads
        (Falcon's fused multi-query projection viewed as (heads + 2, d): the query heads,
        then one key head and one value head): heads ``a`` to ``b`` as a part of their own,
        made by the layer's rows ``a * d`` to ``b * d``; None for any other op."""
        if node.target is not operator.getitem or len(inputs) != 1:
            return None
        source, heads = inputs[0]
        if not isinstance(heads, Heads) or heads.repeat != 1:
            return None
        shape = shape_of(source)
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        entries = per_axis(tuple(_as_range(i) for i in index), len(shape))
        if entries is None or any(not isinstance(i, slice) for i in entries):
            return None
        cut = [
            (axis, i)
            for axis, i in enumerate(entries)
            if isinstance(i, slice) and i.indices(shape[axis]) != (0, shape[axis], 1)
        ]
        if len(cut) != 1 or cut[0][0] != heads.head_axis:
            return None
        first, stop, step = cut[0][1].indices(heads.heads)
        if step != 1 or stop <= first or not self._fresh(heads):
            return None
        return self._whole_heads(node, heads, first, stop)

    def _pinned_head(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Units | None:
        """``x[:, :, i, :]``: one head of heads whose dimensions a norm pinned and that no
        attention reads (Gemma 4's per-layer inputs, layer i's slice): its units, which no
        symmetry moves (a space of their own, pinned; what they meet is pinned with them);
        None for any other op."""
        if node.target is not operator.getitem or len(inputs) != 1:
            return None
        source, heads = inputs[0]
        if not isinstance(heads, Heads) or heads.repeat != 1 or not heads.space.root().heads_only:
            return None
        shape = shape_of(source)
        entries = per_axis(node.args[1], len(shape))
        if entries is None:
            return None
        picked = [a for a, i in enumerate(entries) if isinstance(i, int)]
        cut = [a for a, i in enumerate(entries) if i != slice(None) and not isinstance(i, int)]
        if picked != [heads.head_axis] or cut:
            return None
        space = Space(size=heads.space.root().size // heads.heads, created=self.order[node])
        space.pin()
        return Units(space, heads.dim_axis - (heads.dim_axis > heads.head_axis))

    @staticmethod
    def _fresh(heads: Heads) -> bool:
        """Whether ``heads`` are one layer's outputs viewed into heads (nothing pinned,
        the dimensions right after the heads), which ranges of whole heads can cut."""
        space = heads.space.root()
        return (
            len(space.producers) == 1
            and _flat_tap(space) is not None
            and not space.heads_only
            and heads.dim_axis == heads.head_axis + 1
            and heads.repeat == 1
        )

    def _whole_heads(self, node: fx.Node, heads: Heads, first: int, stop: int) -> Heads:
        """Heads ``first`` to ``stop`` of one layer's outputs viewed into heads, as a part
        of their own: the layer's rows ``first * d`` to ``stop * d``."""
        space = heads.space.root()
        flat = _flat_tap(space)
        made = space.producers[0]
        if not self._fresh(heads) or flat is None or made.start or made.stride:
            raise unsupported(
                f"the outputs of `{made.path}` are cut into parts twice, or after other steps",
                op_name(node),
                location(node),
            )
        d = space.size // heads.heads
        part = self._part_space(node, made, (stop - first) * d, first * d)
        part.taps[f"{flat.node}@{first * d}"] = Tap(flat.node, flat.axis, 1, first * d)
        space.carved = True
        return replace(heads, space=part, heads=stop - first)

    # -- key/value heads repeated for the query heads that share them ----------------------

    def _repeat_heads(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Value | None:
        """``k[:, :, None]`` (the first step of transformers' ``repeat_kv``) or
        ``k.repeat_interleave(n, dim=1)`` of key or value heads, or None for other ops."""
        if len(inputs) != 1 or not isinstance(inputs[0][1], Heads):
            return None
        source, heads = inputs[0][0], inputs[0][1]
        if heads.repeat != 1:
            return None
        ndim = len(shape_of(source))
        if node.target in _EXPAND and heads.heads == 1:  # one head broadcast to n heads
            before, after = shape_of(source), shape_of(node)
            changed = [a for a in range(ndim) if before[a] != after[a]]
            if len(before) == len(after) and changed == [heads.head_axis]:
                return _shared(heads, after[heads.head_axis])
            return None
        if node.target in ("repeat_interleave", torch.repeat_interleave):
            times = node.kwargs.get("repeats", node.args[1] if len(node.args) > 1 else None)
            dim = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else None)
            if isinstance(times, int) and isinstance(dim, int) and dim % ndim == heads.head_axis:
                return replace(heads, heads=heads.heads * times, repeat=times)
            return None
        if node.target is not operator.getitem:
            return None
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if index.count(None) != 1 or Ellipsis in index:
            return None
        at = index.index(None)
        rest = index[:at] + index[at + 1 :]
        if any(i != slice(None) for i in rest) or at != heads.head_axis + 1:
            return None
        dim_axis = heads.dim_axis + (heads.dim_axis >= at)
        return Spread(replace(heads, dim_axis=dim_axis), at)

    def _spread_step(self, node: fx.Node, spread: Spread) -> Value:
        """``expand`` of the new axis to n copies, then the view that merges it into the
        head axis: each key/value head ``n`` times in a row (``repeat=n``)."""
        at, name = location(node), op_name(node)
        source = node.args[0]
        assert isinstance(source, fx.Node)
        before, after = shape_of(source), shape_of(node)
        heads = spread.heads
        if node.target in _EXPAND and len(before) == len(after):
            changed = [a for a in range(len(before)) if before[a] != after[a]]
            if not changed:
                return spread
            if changed == [spread.axis] and before[spread.axis] == 1:
                return replace(spread, copies=after[spread.axis])
        count = before[spread.axis - 1] * spread.copies
        merged = (*before[: spread.axis - 1], count, *before[spread.axis + 1 :])
        if node.target in _RESHAPES and after == merged:
            dim_axis = heads.dim_axis - (heads.dim_axis > spread.axis)
            return replace(heads, dim_axis=dim_axis, heads=count, repeat=spread.copies)
        raise unsupported(
            f"op `{name}` in {at} on key/value heads given a new axis; canon follows "
            "`k[:, :, None].expand(...).reshape(...)` (transformers' repeat_kv)" + _SUPPORTED,
            name,
            at,
        )

    # -- rotary position embeddings -------------------------------------------------------

    def _rotary(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Value | None:
        """A step of ``q * cos + rotate_half(q) * sin`` (rotary position embeddings), or
        None for any other op: factors that differ between a head's dimensions but not
        between heads, a head's dimensions cut in parts (a partial rotary embedding turns
        only the first ones), negated and put back in another order. Each pins the
        dimensions in their heads: only whole heads still permute (the space becomes
        ``heads_only``), so any such step that treats every head alike keeps the function."""
        target = node.target
        woven = [v for _, v in inputs if isinstance(v, Woven)]
        if woven:
            return self._woven_step(node, inputs, woven[0])
        heads = [(n, v) for n, v in inputs if isinstance(v, (Heads, Sliced))]
        # computed from the positions, or held by the module (cos/sin buffers)
        constants = [
            n
            for n, v in inputs
            if isinstance(v, (Param, Fixed)) or (isinstance(v, Units) and v.space.pinned)
        ]
        if len(heads) + len(constants) != len(inputs) or not heads:
            return None
        value = heads[0][1]
        if target is operator.getitem and len(inputs) == 1:
            return self._slice_heads(node, heads[0][0], value)
        if target in (operator.neg, torch.neg, "neg") and len(inputs) == 1:
            return replace(value, turned=True) if isinstance(value, Sliced) else value
        if target in CAT and not constants:
            return self._join_slices(node, heads)
        if target is torch.stack and not constants:
            return self._weave(node, heads)
        if target in MUL and len(heads) == 1 and constants:
            return self._dimension_factors(node, value, constants)
        if target in ADD and len(heads) == 2 and not constants:
            a, b = (v for _, v in heads)
            if _same_place(a, b):
                return replace(a, turned=True) if isinstance(a, Sliced) else a
            if _mixed_halves(a, b):  # x1 * cos - x2 * sin: a turned half, in x1's place
                return a
        return None

    def _single_heads(
        self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]
    ) -> list[tuple[fx.Node, Value]] | None:
        """A rotary embedding's step (a product with angles, a slice, a negation, a join, a
        sum) or a broadcast over the heads (``expand``) on a layer's outputs laid out as one
        head, (batch, 1, tokens, d): ``inputs`` with those outputs as that head (DeepSeek's
        rotated key head, which every query head shares); None for any other op."""
        if node.target not in _ONE_HEAD_STEPS:
            return None
        if node.target in _RESHAPES and not _in_pairs(node):
            return None
        found: list[tuple[fx.Node, Value]] = []
        changed = constant = False
        for n, v in inputs:
            one = _one_head(n, v)
            if isinstance(v, Units) and isinstance(one, Heads):
                changed = True
                found.append((n, one))
            elif _constant(v) or isinstance(v, (Heads, Sliced)):
                constant = constant or _constant(v)
                found.append((n, v))
            else:
                return None
        if not changed or (node.target in MUL and not constant):
            return None
        return found

    def _slice_heads(self, node: fx.Node, source: fx.Node, value: Heads | Sliced) -> Value | None:
        """``q[..., a:b]`` or ``q[..., ::2]``: some of every head's dimensions (a rotary
        half, the dimensions a partial rotary embedding turns, every other one)."""
        whole = value if isinstance(value, Heads) else value.heads
        shape = shape_of(source)
        index = per_axis(node.args[1], len(shape))
        if index is None or any(not isinstance(i, slice) for i in index):
            return None
        cut = [
            (axis, i)
            for axis, i in enumerate(index)
            if isinstance(i, slice) and i.indices(shape[axis]) != (0, shape[axis], 1)
        ]
        if not cut:
            return value
        if all(axis not in (whole.head_axis, whole.dim_axis) for axis, _ in cut):
            return value  # some tokens (EVA's patches, past its class token): every unit
        if len(cut) != 1 or cut[0][0] != whole.dim_axis:
            return None
        picked = cut[0][1]
        if isinstance(value, Heads):  # an empty part (full rotary's rest) joins as nothing
            width = shape[value.dim_axis]
            return Sliced(value, tuple(range(width))[picked], width)
        return replace(value, dims=value.dims[picked])

    def _parts_of_heads(
        self, node: fx.Node, parts: Sequence[tuple[fx.Node, Heads | Sliced]]
    ) -> list[Sliced] | None:
        """The parts that ``cat`` or ``stack`` joins, each as :class:`Sliced` (whole heads
        as all their dimensions), or None unless they are parts of the same heads."""
        sliced = []
        for n, p in parts:
            if isinstance(p, Heads):
                width = shape_of(n)[p.dim_axis]
                p = Sliced(p, tuple(range(width)), width)
            sliced.append(p)
        same = {replace(p, dims=(), turned=False) for p in sliced}
        return sliced if len(same) == 1 else None

    def _join_slices(
        self, node: fx.Node, parts: Sequence[tuple[fx.Node, Heads | Sliced]]
    ) -> Value | None:
        """``cat((-q2, q1), dim=-1)``: parts of every head's dimensions that together hold
        a range of them once each (the whole head: the heads again). Whole heads of one
        space joined along another axis (EVA's class token, then its rotated patches) are
        those heads."""
        ndim = len(shape_of(node))
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        first = parts[0][1]
        if (
            isinstance(dim, int)
            and isinstance(first, Heads)
            and dim % ndim not in (first.head_axis, first.dim_axis)
            and all(
                isinstance(v, Heads)
                and v.space.root() is first.space.root()
                and (v.head_axis, v.dim_axis, v.heads, v.repeat)
                == (first.head_axis, first.dim_axis, first.heads, first.repeat)
                for _, v in parts
            )
        ):
            return first
        sliced = self._parts_of_heads(node, parts)
        if sliced is None or not isinstance(dim, int):
            return None
        if dim % ndim != sliced[0].heads.dim_axis:
            return None
        return _joined(sliced)

    def _weave(
        self, node: fx.Node, parts: Sequence[tuple[fx.Node, Heads | Sliced]]
    ) -> Value | None:
        """``stack((-x2, x1), dim=-1)`` of parts of every head's dimensions of one size,
        on a new axis right after the dimension axis (an interleaved rotary embedding)."""
        sliced = self._parts_of_heads(node, parts)
        ndim = len(shape_of(node))
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if sliced is None or not isinstance(dim, int):
            return None
        first = sliced[0]
        if dim % ndim != first.heads.dim_axis + 1 or len({len(p.dims) for p in sliced}) != 1:
            return None
        return Woven(first.heads, tuple(p.dims for p in sliced), first.width)  # all moved

    def _woven_step(
        self, node: fx.Node, inputs: list[tuple[fx.Node, Value]], woven: Woven
    ) -> Value | None:
        """An op on a head's dimensions woven in pairs: flattened back into one axis, or
        (DeepSeek-V2's rotary embedding through complex numbers) viewed as complex numbers
        and back, multiplied by constants, cast: still those pairs."""
        target = node.target
        if len(inputs) == 1 and (target in _COMPLEX or target in _KEEP):
            return woven
        if target in MUL and all(_constant(v) for _, v in inputs if v is not woven):
            return woven
        return self._flatten_woven(node, woven) if len(inputs) == 1 else None

    def _flatten_woven(self, node: fx.Node, woven: Woven) -> Value | None:
        """``x.flatten(-2)`` after :meth:`_weave`: the parts interleaved into one axis."""
        source = node.args[0]
        assert isinstance(source, fx.Node)
        before, after = shape_of(source), shape_of(node)
        axis = woven.heads.dim_axis
        merged = (*before[:axis], before[axis] * before[axis + 1], *before[axis + 2 :])
        if node.target not in _RESHAPES or after != merged:
            return None
        parts = [Sliced(woven.heads, dims, woven.width) for dims in woven.parts]
        return _joined(parts, woven=True)

    def _dimension_factors(
        self, node: fx.Node, value: Heads | Sliced, constants: list[fx.Node]
    ) -> Value | None:
        """``q * cos``: factors that differ between a head's dimensions pin them (a part of
        the heads: when it joins them again); factors that differ between heads too (the
        learned per-head frequencies of timm's mixed rotary embedding) keep the heads in
        place as well."""
        whole = value if isinstance(value, Heads) else value.heads
        ndim = len(shape_of(node))
        for constant in constants:
            shape = (1,) * (ndim - len(shape_of(constant))) + shape_of(constant)
            if len(shape) != ndim or shape[whole.head_axis] not in (
                1,
                shape_of(node)[whole.head_axis],
            ):
                return None
            if shape[whole.head_axis] != 1:
                whole.space.root().heads_fixed = True
            if shape[whole.dim_axis] != 1 and isinstance(value, Heads):
                whole.space.pin()
        return replace(value, turned=True) if isinstance(value, Sliced) else value

    def _module_of(self, node: fx.Node) -> nn.Module | None:
        if node.op != "call_module":
            return None
        gm = self.gm  # the walker's traced module
        module: nn.Module = gm.get_submodule(str(node.target))
        return module

    def _permute_heads(self, node: fx.Node, source: fx.Node, value: Heads | Scores) -> Value:
        dims = permuted_dims(node, len(shape_of(source)))
        if isinstance(value, Scores):
            return replace(value, head_axis=dims.index(value.head_axis))
        return replace(
            value, head_axis=dims.index(value.head_axis), dim_axis=dims.index(value.dim_axis)
        )

    def _reshape_heads(self, node: fx.Node, source: fx.Node, value: Heads | Scores) -> Value:
        """A view that keeps the heads, merges (heads, d) back into one unit axis, or
        merges the batch into the heads (``(batch * heads, tokens, d)``, BLOOM's) and
        splits it off again."""
        in_shape, out_shape = shape_of(source), shape_of(node)
        if in_shape == out_shape:
            return value
        at = location(node)
        squeezed = _squeezed(in_shape, out_shape, value)
        if squeezed is not None:
            return squeezed
        if isinstance(value, Heads) and value.dim_axis == len(in_shape) - 1 and _in_pairs(node):
            # each head's dimensions as pairs (2i, 2i + 1): a rotary embedding's, as complex
            d = in_shape[-1]
            return Woven(value, (tuple(range(0, d, 2)), tuple(range(1, d, 2))), d)
        regrouped = _batch_regrouped(in_shape, out_shape, value)
        if regrouped is not None:
            return regrouped
        split = _head_axis_split(in_shape, out_shape, value)
        if split is not None and isinstance(value, Heads) and self._fresh(value):
            flat = _flat_tap(value.space.root())
            assert flat is not None  # checked by _fresh
            value.space.root().carved = True
            outer, inner = split
            axis = value.head_axis
            return Stacked(value.space.root(), axis, axis + 1, axis + 2, outer, inner, flat.node)
        batched = _batch_merged(in_shape, out_shape, value.head_axis, value.heads)
        if batched is not None:
            if isinstance(value, Scores):
                return replace(value, head_axis=batched)
            return replace(
                value, head_axis=batched, dim_axis=value.dim_axis + batched - value.head_axis
            )
        between = range(value.head_axis + 1, value.dim_axis) if isinstance(value, Heads) else ()
        if (
            isinstance(value, Heads)
            and value.dim_axis > value.head_axis
            and all(in_shape[a] == 1 for a in between)  # only axes of one entry between
        ):
            before = math.prod(in_shape[: value.head_axis])
            width = in_shape[value.head_axis] * in_shape[value.dim_axis]
            for j, size in enumerate(out_shape):
                if math.prod(out_shape[:j]) == before and size == width:
                    d = in_shape[value.dim_axis]
                    return Units(
                        value.space.root(),
                        j,
                        repeat=value.repeat,
                        head=d if value.repeat > 1 else 1,
                    )
        raise unsupported(
            f"op `{op_name(node)}` in {at} maps attention heads of shape {list(in_shape)} to "
            f"{list(out_shape)}" + _SUPPORTED,
            op_name(node),
            at,
        )

    def _sdpa(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Heads:
        at = location(node)
        args = list(node.args[:3]) + [node.kwargs.get(k) for k in ("query", "key", "value")]
        found = [_one_head(a, self.values.get(a)) for a in args if isinstance(a, fx.Node)][:3]
        if len(found) == 3 and isinstance(found[0], Fixed) and isinstance(found[2], Heads):
            return self._latent_query(node, found[1], found[2])
        riders: tuple[Space, ...] = ()
        if len(found) == 3 and isinstance(found[1], JoinedHeads):
            found[0], found[1], riders = self._main_pair(node, found[0], found[1])
        if len(found) != 3 or not all(isinstance(v, Heads) for v in found):
            raise unsupported(
                f"scaled_dot_product_attention in {at} does not read three projections split "
                "into heads" + _SUPPORTED,
                "scaled_dot_product_attention",
                at,
            )
        mask = node.kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 else None)
        # laid out as the scores: [..., heads, queries, keys]
        ndim = len(shape_of(node))
        fixed = isinstance(mask, fx.Node) and _differs_between_heads([mask], ndim - 3, ndim)
        if isinstance(mask, fx.Node) and isinstance(self.values.get(mask), (Units, Heads)):
            value = self.values[mask]
            if not (isinstance(value, Units) and value.space.pinned):
                raise unsupported(
                    f"the attention mask in {at} depends on hidden units",
                    "scaled_dot_product_attention",
                    at,
                )
        q, k, v = (h for h in found if isinstance(h, Heads))
        k, v = _shared(k, q.heads), _shared(v, q.heads)
        ndim = len(shape_of(node))
        # grouped-query attention: each key/value head serves `repeat` query heads in a row,
        # repeated by SDPA itself (enable_gqa) or before (repeat_kv)
        grouped = bool(node.kwargs.get("enable_gqa")) and q.heads % k.heads == 0
        extra = q.heads // k.heads if grouped else 1
        repeat = k.repeat * extra
        for h in (q, k, v):
            heads = q.heads if h is q else h.heads * extra
            layout = h.repeat == (1 if h is q else k.repeat)
            if (h.head_axis, h.dim_axis) != (ndim - 3, ndim - 1) or heads != q.heads or not layout:
                raise unsupported(
                    f"scaled_dot_product_attention in {at} reads heads that are not laid out "
                    "as (batch, heads, tokens, d) with the same number of heads (or, with "
                    "enable_gqa=True, query heads a multiple of key/value heads)" + _SUPPORTED,
                    "scaled_dot_product_attention",
                    at,
                )
        if fixed:  # a per-head mask (ALiBi's slopes) stays in place: so do the heads
            for h in (q, k, v):
                h.space.root().heads_fixed = True
        self._record(q.space, k.space, v.space, q.heads // repeat, node, repeat, riders=riders)
        return Heads(v.space.root(), ndim - 3, ndim - 1, q.heads, repeat)

    def _head_gate(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Heads | None:
        """An attention's output times one unit per head, the same for each head's
        dimensions (Bailing's ``out * sigmoid(g_proj(x)).unsqueeze(-1)``): the output, the
        gate's units riding with the heads (each head's gate moves with it, only permuted:
        the gate is no linear function of them); None for any other op."""
        if node.target not in MUL or len(inputs) != 2:
            return None
        heads = [(n, v) for n, v in inputs if isinstance(v, Heads)]
        units = [(n, v) for n, v in inputs if isinstance(v, Units)]
        if len(heads) != 1 or len(units) != 1:
            return None
        (_, out), (gate_node, gate) = heads[0], units[0]
        space, shape = gate.space.root(), shape_of(gate_node)
        made = [i for i, a in enumerate(self.attentions) if a.value is out.space.root()]
        if (
            not made
            or space.pinned
            or gate.block != 1
            or gate.repeat != 1
            or gate.axis != out.head_axis
            or space.size != out.heads
            or len(shape) <= out.dim_axis
            or shape[out.dim_axis] != 1
        ):
            return None
        space.heads_only = True
        i = made[-1]
        att = self.attentions[i]
        self.attentions[i] = replace(att, riders=(*att.riders, space))
        return out

    def _join_heads(
        self, node: fx.Node, parts: Sequence[tuple[fx.Node, Heads | JoinedHeads]]
    ) -> JoinedHeads | None:
        """``cat`` of heads laid out alike along their dimension axis, not parts of one
        head's dimensions (:meth:`_join_slices`): each part keeps its space; None for any
        other join."""
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if not isinstance(dim, int):
            return None
        return _heads_joined(parts, dim % len(shape_of(node)))

    def _fill(self, node: fx.Node) -> bool:
        """``x[..., a:b].copy_(heads)`` into a tensor made empty (``new_empty``, DeepSeek's
        keys): each write a range of the dimension axis; once the ranges cover it, the
        tensor is the heads joined in their order (:class:`JoinedHeads`), until then
        refused if read. False for any other ``copy_``."""
        dest, source = node.args[0], node.args[1] if len(node.args) > 1 else None
        if not isinstance(dest, fx.Node) or dest.target is not operator.getitem:
            return False
        if list(dest.users) != [node]:
            return False
        base = dest.args[0]
        if not isinstance(base, fx.Node) or base.op != "call_method" or base.target not in NEW:
            return False
        shape = shape_of(base)
        index = per_axis(dest.args[1], len(shape))
        if index is None or not isinstance(source, fx.Node):
            return False
        cut = [
            (axis, i.indices(shape[axis]))
            for axis, i in enumerate(index)
            if isinstance(i, slice) and i.indices(shape[axis]) != (0, shape[axis], 1)
        ]
        if len(cut) != 1 or cut[0][1][2] != 1 or not all(isinstance(i, slice) for i in index):
            return False
        axis, (start, stop, _) = cut[0]
        self.values.pop(dest, None)  # a window only this write reads
        pieces = sorted([*self.fills.get(base, []), (start, stop, source)], key=lambda p: p[0])
        self.fills[base] = pieces
        at = location(node)
        ends = [0] + [p[1] for p in pieces]
        complete = ends[-1] == shape[axis] and all(
            p[0] == e for p, e in zip(pieces, ends, strict=False)
        )
        values = [(p[2], _one_head(p[2], self.values.get(p[2]))) for p in pieces]
        held = [(n, v) for n, v in values if isinstance(v, (Heads, JoinedHeads))]
        joined = _heads_joined(held, axis) if complete and len(held) == len(values) else None
        if joined is None:
            error = unsupported(
                f"op `copy_` in {at} writes a new tensor in parts that are not attention heads "
                "joined along their dimensions" + _SUPPORTED,
                "copy_",
                at,
            )
            spaces = tuple(spaces_in([v for _, v in values]))
            self.values[base] = Unfollowed(spaces, error)  # refused if read before it is whole
        else:
            self.values[base] = joined
        if node.users:  # ``copy_`` returns the part it wrote
            self.values[node] = self.values[base]
        return True

    def _joined_heads_step(self, node: fx.Node, inputs: list[tuple[fx.Node, Value]]) -> Value:
        """An op on :class:`JoinedHeads`: the attention that reads them, a further ``cat``
        of heads, or an op on them and constants alone (a transpose, a factor per token)
        that gives each part heads laid out alike again, taken part by part."""
        name, at, target = op_name(node), location(node), node.target
        if target is F.scaled_dot_product_attention:
            return self._sdpa(node, inputs)
        if target in MATMUL and len(inputs) == 2:
            (_, query), (_, key) = inputs
            if isinstance(key, JoinedHeads):
                q, k, riders = self._main_pair(node, query, key)
                scores = self._scores(node, q, k)
                if scores is not None:
                    return replace(scores, riders=riders)
        if target in CAT and all(isinstance(v, (Heads, JoinedHeads)) for _, v in inputs):
            joined = self._join_heads(node, inputs)  # type: ignore[arg-type]
            if joined is not None:
                return joined
        held = [(n, v) for n, v in inputs if isinstance(v, JoinedHeads)]
        if len(held) == 1 and all(_constant(v) for n, v in inputs if n is not held[0][0]):
            source, value = held[0]
            done = [
                self._attention_step(node, [(n, part if n is source else v) for n, v in inputs])
                for part in value.parts
            ]
            if all(isinstance(h, Heads) for h in done):
                layout = {(h.head_axis, h.dim_axis, h.heads) for h in done}  # type: ignore[union-attr]
                if len(layout) == 1:
                    return JoinedHeads(tuple(done), value.widths)  # type: ignore[arg-type]
        raise unsupported(
            f"op `{name}` in {at} reads heads joined from several tensors; canon follows "
            "them as the queries and keys of scaled_dot_product_attention",
            name,
            at,
        )

    def _main_pair(
        self, node: fx.Node, query: Value | None, joined: JoinedHeads
    ) -> tuple[Heads, Heads, tuple[Space, ...]]:
        """Joined keys and their queries, joined alike or one projection's heads, cut here
        (DeepSeek's latent attention, Kimi Linear's unrotated one): the one pair of parts
        whose keys are heads of their own (the queries and keys of the attention's groups),
        and the query parts whose keys are one head every query head shares (a rotated
        key head: its dimensions stay in place, and so do the query dimensions it meets,
        within heads that move with the attention's; the shared head's space is pinned)."""
        at = location(node)
        if isinstance(query, Heads):
            query = self._cut_heads(node, query, joined.widths)
        if not isinstance(query, JoinedHeads) or joined.widths != query.widths:
            raise unsupported(
                f"scaled_dot_product_attention in {at} reads queries and keys joined from "
                "parts of different widths" + _SUPPORTED,
                "scaled_dot_product_attention",
                at,
            )
        heads = query.parts[0].heads
        main: list[tuple[Heads, Heads]] = []
        riders: list[Space] = []
        for q, k in zip(query.parts, joined.parts, strict=True):
            k = _shared(k, heads)
            if k.repeat == heads and heads > 1:  # one key head for every query head
                pin_all(k)
                q.space.root().heads_only = True
                riders.append(q.space.root())
            else:
                main.append((q, k))
        if len(main) != 1:
            raise unsupported(
                f"scaled_dot_product_attention in {at} reads queries and keys joined from "
                "several parts that are heads of their own" + _SUPPORTED,
                "scaled_dot_product_attention",
                at,
            )
        return main[0][0], main[0][1], tuple(riders)

    def _cut_heads(
        self, node: fx.Node, heads: Heads, widths: tuple[int, ...]
    ) -> JoinedHeads | None:
        """One projection's heads cut into consecutive parts of each head's dimensions of
        ``widths`` (as a ``split`` would cut them), each part a space of its own; None if the
        heads are not a projection's outputs laid out whole."""
        space = heads.space.root()
        flat = _flat_tap(space)
        fused = len(space.producers) == 1 and not space.carved and not space.heads_only
        if not fused or heads.repeat != 1 or flat is None or len(widths) < 2:
            return None
        space.carved = True
        width = sum(widths)
        parts = tuple(
            replace(
                heads,
                space=self._interleaved_part(
                    node, space, heads.heads, width, sum(widths[:i]), d, flat.node, flat.axis
                ),
            )
            for i, d in enumerate(widths)
        )
        return JoinedHeads(parts, widths)

    def _latent_query(self, node: fx.Node, key: Value | None, value: Heads) -> Heads:
        """``scaled_dot_product_attention(q, k, v)`` whose query no symmetry moves (a
        pooling head's learned latent, projected: timm's attention pool, SigLIP's and the
        Perception Encoder's): the keys cannot move against it and stay in place (they
        form no group), and so do the heads, each weighting the tokens its own way; the
        values' dimensions pass linearly, each head's permuting within it."""
        at = location(node)
        ndim = len(shape_of(node))
        space = value.space.root()
        plain = space.blocks == 1 and not space.heads_only and value.repeat == 1
        if not isinstance(key, Heads) or key.space.root() is space or not plain:
            raise unsupported(
                f"scaled_dot_product_attention in {at} reads a constant query with keys and "
                "values that are not two projections split into heads" + _SUPPORTED,
                "scaled_dot_product_attention",
                at,
            )
        if (value.head_axis, value.dim_axis) != (ndim - 3, ndim - 1):
            raise unsupported(
                f"scaled_dot_product_attention in {at} reads values not laid out as (batch, "
                "heads, tokens, d)" + _SUPPORTED,
                "scaled_dot_product_attention",
                at,
            )
        key.space.root().pinned = True  # its rows stay where the query's columns are
        space.blocks = value.heads
        space.ops.append((self.order[node], linear("attention")))
        return Heads(space, ndim - 3, ndim - 1, value.heads)

    def _baddbmm(self, node: fx.Node) -> Value:
        """``bias.baddbmm(q, k^T, beta=, alpha=)``: the scores ``q @ k^T`` (scaled) plus a
        term that does not depend on the hidden units (BLOOM's ALiBi, a per-head bias:
        the heads then stay in place)."""
        at, name = location(node), op_name(node)
        bias = node.args[0]
        pair = (
            node.kwargs.get("batch1", node.args[1] if len(node.args) > 1 else None),
            node.kwargs.get("batch2", node.args[2] if len(node.args) > 2 else None),
        )
        term = self.values.get(bias) if isinstance(bias, fx.Node) else None
        if isinstance(term, (Heads, Scores)) or (isinstance(term, Units) and not term.space.pinned):
            raise unsupported(
                f"op `{name}` in {at} adds hidden units to attention scores", name, at
            )
        scores = self._matmul(node, pair)
        if not isinstance(scores, Scores):
            raise unsupported(
                f"op `{name}` in {at} multiplies hidden tensors" + _SUPPORTED, name, at
            )
        ndim = len(shape_of(node))
        if isinstance(bias, fx.Node) and _differs_between_heads([bias], scores.head_axis, ndim):
            scores.query.root().heads_fixed = scores.key.root().heads_fixed = True
        return scores

    def _matmul(self, node: fx.Node, pair: Sequence[object]) -> Value:
        """``a @ b`` of queries and keys (the scores) or of scores and values."""
        at, name = location(node), op_name(node)
        ndim = len(shape_of(node))
        values = [_one_head(a, self.values.get(a), True) for a in pair if isinstance(a, fx.Node)]
        if len(values) == 2:
            a, b = values
            if isinstance(a, (Heads, Scores)) and isinstance(b, Heads):
                b = _shared(b, a.heads)
            if isinstance(a, Heads) and isinstance(b, Heads):
                scores = self._scores(node, a, b)
                if scores is not None:
                    return scores
            if (
                isinstance(a, Scores)
                and isinstance(b, Heads)
                and not a.sinks
                and a.head_axis == ndim - 3
                and (b.head_axis, b.dim_axis) == (ndim - 3, ndim - 1)
                and a.heads == b.heads
                and a.repeat == b.repeat
            ):
                self._record(
                    a.query, a.key, b.space, a.heads // a.repeat, node, a.repeat, a.sink, a.riders
                )
                return Heads(b.space.root(), ndim - 3, ndim - 1, a.heads, a.repeat)
        raise unsupported(f"op `{name}` in {at} multiplies hidden tensors" + _SUPPORTED, name, at)

    def _scores(self, node: fx.Node, query: Heads, key: Heads) -> Scores | None:
        """``q @ k`` of query heads and transposed key heads (shared by ``repeat`` query
        heads each), laid out as (..., heads, tokens, d) and (..., heads, d, tokens): the
        scores; None if they are not."""
        ndim = len(shape_of(node))
        if (
            (query.head_axis, query.dim_axis) == (ndim - 3, ndim - 1)
            and (key.head_axis, key.dim_axis) == (ndim - 3, ndim - 2)
            and query.heads == key.heads
            and query.repeat == 1
            and query.space.root().size == key.space.root().size * key.repeat
        ):
            return Scores(query.space.root(), key.space.root(), ndim - 3, query.heads, key.repeat)
        return None

    def _record(
        self,
        query: Space,
        key: Space,
        value: Space,
        heads: int,
        node: fx.Node,
        repeat: int = 1,
        sink: str | None = None,
        riders: tuple[Space, ...] = (),
    ) -> None:
        value.root().ops.append((self.order[node], linear("attention")))
        self.attentions.append(
            _Attention(
                query.root(),
                key.root(),
                value.root(),
                heads,
                location(node),
                repeat,
                sink,
                tuple(r.root() for r in riders),
            )
        )

    # -- the groups they make -----------------------------------------------------------

    def _attention_spaces(self) -> set[int]:
        """The ids of the spaces that attention groups are made of."""
        return {id(s) for a in self.attentions for s in (a.query, a.key, a.value, *a.riders)}

    def _attention_groups(
        self, plain_group: Callable[[Space], UnitGroup]
    ) -> list[tuple[int, UnitGroup]]:
        """Two ``linear`` groups per attention call, with their creation order:
        queries/keys (the key rows as outgoing axes) and values/output columns."""
        groups: list[tuple[int, UnitGroup]] = []
        seen: set[int] = set()
        done: set[tuple[int, ...]] = set()
        for att in self.attentions:
            q, k, v = att.query.root(), att.key.root(), att.value.root()
            ids = {id(q), id(k), id(v)}
            same = (id(q), id(k), id(v), att.heads, att.repeat)
            if same in done:
                continue  # the same layers called again (ALBERT's one layer at every depth)
            done.add(same)
            if len(ids) != 3 or ids & seen:
                raise unsupported(
                    f"attention in {att.where} shares its projections with another" + _SUPPORTED,
                    "attention",
                    att.where,
                )
            seen |= ids
            normed = False
            for space, role in ((q, "queries"), (k, "keys"), (v, "values")):
                nonlinear = [op.name for _, op in space.ops if not (op.homogeneous and op.odd)]
                # a norm over all the query (or key) units (OLMo 2's): it commutes with
                # their permutations, its weights permuted alike, but not with factors
                norms = space is not v and bool(nonlinear) and set(nonlinear) == {"norm"}
                norms = norms and space.blocks == 1
                normed = normed or norms
                # a gate on the output carried by the values (Qwen3.5's): only permuted
                extra = bool(space.carried) and not norms and not (space is v and v.gated)
                extra = extra or bool(space.batchnorms) or bool(space.outgoing and space is not v)
                if len(space.producers) != 1 or extra or (nonlinear and not norms):
                    what = f"op `{nonlinear[0]}`" if nonlinear else "more than one projection"
                    raise unsupported(
                        f"the {role} of the attention in {att.where} pass through {what}"
                        + _SUPPORTED,
                        "attention",
                        att.where,
                    )
            # one key/value head (multi-query attention): no order of heads to share
            link = f"{q.origin}#heads" if att.heads > 1 else ""
            # the units are the key dimensions; with grouped-query attention each one's
            # query rows are repeated over the query heads that share its key head
            first, second = (q, k) if att.repeat == 1 else (k, q)
            made, other = first.producers[0], second.producers[0]
            head = k.size // att.heads
            # the query rows of a key head's group: one run of the queries' producer each
            # (Falcon's newer layout interleaves each group's queries, key and value)
            runs = other.stride == 0 or other.head == att.repeat * head
            # ... or one run per query head, ``stride`` apart (Qwen3.5's queries, each head's
            # rows followed by its gate's): one axis per query head of a group
            spread = att.repeat > 1 and other.stride > 0 and other.head == head
            if att.repeat > 1 and not (runs or spread):
                raise unsupported(
                    f"the attention in {att.where} shares key heads between query heads and "
                    "reads them from a projection that interleaves queries, keys and values"
                    + _SUPPORTED,
                    "attention",
                    att.where,
                )
            rows = []
            for name, start in (
                (other.weight, other.start),
                (other.bias, other.start if other.bias_start is None else other.bias_start),
            ):
                if name is None:
                    continue
                if spread:
                    step, copies = other.stride, att.repeat
                    rows += [
                        OutgoingAxis(
                            name, 0, start=start + i * step, head=head, stride=copies * step
                        )
                        for i in range(copies)
                    ]
                    continue
                layout = layout_of(other)
                layout["start"] = start
                if att.repeat > 1:
                    layout["repeat"], layout["head"] = att.repeat, head
                rows.append(OutgoingAxis(name, 0, **layout))
            taps = (*q.taps.values(), *k.taps.values()) if att.repeat == 1 else k.taps.values()
            # rotary embeddings pin the query/key dimensions (and so their scales: a
            # factor on one dimension of a rotated pair is no symmetry; DESIGN §3b)
            pinned = q.heads_only or k.heads_only
            # a per-head term on the scores (ALiBi) keeps every head in place: each group's
            # units permute within their head only (in blocks), pinned ones not at all; so
            # does a single key/value head (multi-query attention), which has nowhere to go
            fixed = q.heads_fixed or k.heads_fixed or v.heads_fixed or att.heads == 1
            qk = UnitGroup(
                name=first.origin,
                size=first.size,
                symmetry="none" if pinned or normed else "linear",
                producers=(made.producer(),),
                outgoing=tuple(rows),
                # with grouped-query attention a query norm's weights repeat as the rows do
                carried=tuple(
                    dict.fromkeys(
                        [replace(c, repeat=att.repeat, head=head) for c in q.carried] + k.carried
                        if att.repeat > 1
                        else q.carried + k.carried
                    )
                ),
                taps=tuple(taps),
                heads=att.heads,
                link=link,
                heads_only=pinned,
            )
            vo = replace(
                plain_group(v),
                symmetry="none" if v.heads_only else "linear",
                heads=att.heads,
                link=link,
                heads_only=v.heads_only,
            )
            if fixed:
                qk, vo = (
                    replace(g, heads=1, link="", heads_only=False, blocks=blocks)
                    for g, blocks in (
                        (qk, qk.size if pinned else att.heads),
                        (vo, vo.size if v.heads_only else att.heads),
                    )
                )
            whole = not pinned or fixed or normed or att.repeat > 1
            parts = None if whole else _split_pinned(qk, q, k, head)
            groups += [(q.created, g) for g in parts or (qk,)] + [(v.created, vo)]
            if att.sink is not None and not fixed:
                # one sink per query head: whole key heads' runs of them move with the heads
                sinks = UnitGroup(
                    name=att.sink,
                    size=att.heads * att.repeat,
                    symmetry="none",
                    producers=(Producer(att.sink),),
                    heads=att.heads,
                    link=link,
                    heads_only=True,
                )
                groups.append((q.created, sinks))
            groups += [(r.created, self._rider_group(r, att, link, fixed)) for r in att.riders]
        return groups

    def _rider_group(self, rider: Space, att: _Attention, link: str, fixed: bool) -> UnitGroup:
        """The group of query dimensions that meet a key head every query head shares
        (:meth:`_main_pair`): their heads move with the attention's, their dimensions stay
        (under grouped-query attention, each key head's run of query heads as one block)."""
        if len(rider.producers) != 1 or rider.outgoing or rider.carried or rider.batchnorms:
            raise unsupported(
                f"the queries of the attention in {att.where} that meet its shared key head "
                "are not one projection's rows" + _SUPPORTED,
                "attention",
                att.where,
            )
        group = UnitGroup(
            name=rider.origin,
            size=rider.size,
            symmetry="none",
            producers=(rider.producers[0].producer(),),
            taps=tuple(rider.taps.values()),
            heads=att.heads,
            link=link,
            heads_only=True,
        )
        if fixed:
            return replace(group, heads=1, link="", heads_only=False, blocks=rider.size)
        return group

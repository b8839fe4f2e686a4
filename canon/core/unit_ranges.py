"""Ranges of a space's units: a ``split``, ``chunk`` or slice along the units of a tensor
that is not one layer's own outputs (a layer's outputs after a norm or an activation, a
residual stream, several layers' units side by side), and a ``cat`` of a space's ranges
in order, which is the space again.

Res2Net cuts a block's hidden units (after BatchNorm and ReLU) into ranges that separate
convolutions read, MixNet and InceptionNeXt convolve ranges of their channels with
kernels of different sizes, gMLP gates one half of its hidden units by the other. A
permutation that keeps such a function moves each range's units among themselves only:
each range is a space of its own (:attr:`~canon.core.walk_values.Space.pieces`), and
what else moves with the cut space (its producers' rows, the norm's weights, the columns
of the layers that read it whole) moves with each range's units from the range's first
unit on. The walk collects those tensors on the cut space as for any other and hands them
to its ranges at the end (:meth:`UnitRanges._spread_pieces`), so a space may be cut and
also used whole, before or after the cut.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

from torch import fx

from canon.core.ops import op_name
from canon.core.walk_values import (
    Concat,
    Made,
    Pieces,
    Space,
    Units,
    Value,
    location,
    shape_of,
    unsupported,
)


class UnitRanges:
    """The :class:`~canon.core.unit_spaces.Walker`'s steps for ranges of units (a mixin:
    it shares the walker's ``values`` and ``order``)."""

    values: dict[fx.Node, Value]
    order: dict[fx.Node, int]
    cut_spaces: list[Space]  # every space cut into ranges, in the order they were cut

    def _cut(
        self, node: fx.Node, space: Space, start: int, stop: int, bounds: tuple[int, ...] = ()
    ) -> Space:
        """The space of units ``start`` to ``stop`` of ``space``: the space itself when
        that is all of it, else one of its ranges (cut now, if not yet, at ``start``,
        ``stop`` and ``bounds``: where the other parts of the same split end; a range of a
        range is cut further). A range across ranges cut before is refused."""
        space = space.root()
        if space.pinned or (start, stop) == (0, space.size):
            return space
        at = location(node)
        block = space.size // space.blocks  # units permute within blocks this wide
        inside = (b for b in (start, stop, *bounds) if 0 < b < space.size)
        across = space.blocks > 1 and any(b % block for b in inside)
        structured = space.heads > 1 or space.heads_only or across or space.link
        if structured or space.carved or space.factor:
            raise unsupported(
                f"op `{op_name(node)}` in {at} cuts units that move in heads or blocks, or "
                "that are cut as a fused projection's parts; canon cuts plain hidden units",
                op_name(node),
                at,
            )
        if not space.pieces:
            ends = sorted({0, start, stop, space.size, *(b for b in bounds if 0 < b < space.size)})
            space.pieces = [
                (a, Space(b - a, created=self.order[node], origin=f"{space.origin}@{a}"))
                for a, b in itertools.pairwise(ends)
            ]
            for _, piece in space.pieces if space.blocks > 1 else ():
                piece.blocks = piece.size // block  # a grouped convolution's groups, cut between
            self.cut_spaces.append(space)
        for first, piece in space.pieces:
            if first <= start and stop <= first + piece.size:
                inner = tuple(b - first for b in bounds)
                return self._cut(node, piece, start - first, stop - first, inner)
        raise unsupported(
            f"op `{op_name(node)}` in {at} takes units {start} to {stop} of a tensor that is "
            "already cut elsewhere, across that cut",
            op_name(node),
            at,
        )

    def _range(
        self,
        node: fx.Node,
        value: Units | Concat,
        width: int,
        start: int,
        stop: int,
        bounds: tuple[int, ...],
    ) -> Units | Concat:
        """Units ``start`` to ``stop`` of ``value`` (``width`` units in all, cut at
        ``bounds`` by the same split): a range of its space, or of several layers' units
        side by side, each of those cut where the range ends inside it."""
        if isinstance(value, Units):
            space = value.space.root()
            if not space.pieces or space.pinned or (start, stop) == (0, space.size):
                return Units(self._cut(node, space, start, stop, bounds), value.axis)
            for f, piece in space.pieces:
                if f <= start and stop <= f + piece.size:  # within a range cut before
                    inner = tuple(b - f for b in bounds)
                    within = Units(piece, value.axis)
                    return self._range(node, within, piece.size, start - f, stop - f, inner)
            # across ranges cut before: those ranges side by side
            value = Concat(tuple((Units(p, value.axis), f) for f, p in space.pieces), value.axis)
        ends = [first for _, first in value.parts[1:]] + [width]
        found: list[tuple[Units, int]] = []
        for (units, first), end in zip(value.parts, ends, strict=True):
            low, high = max(start, first), min(stop, end)
            if low < high:
                inner = tuple(b - first for b in bounds)
                space = self._cut(node, units.space, low - first, high - first, inner)
                found.append((Units(space, value.axis), low - start))
        if len(found) == 1:
            return found[0][0]
        return Concat(tuple(found), value.axis)

    def _pieces(self, node: fx.Node, source: fx.Node, value: Units | Concat) -> Pieces:
        """``split`` / ``chunk`` along the units: each part a range of them."""
        at = location(node)
        metas = node.meta["tensor_meta"]
        in_shape = shape_of(source)
        axis = value.axis
        same = all(
            tuple(m.shape)[:axis] == in_shape[:axis]
            and tuple(m.shape)[axis + 1 :] == in_shape[axis + 1 :]
            for m in metas
        )
        flat = value.block == 1 and (not isinstance(value, Units) or value.repeat == 1)
        if not (same and flat):
            raise unsupported(
                f"op `{op_name(node)}` in {at} cuts hidden units; canon supports cutting "
                "them into ranges along their unit axis",
                op_name(node),
                at,
            )
        sizes = [int(m.shape[axis]) for m in metas]
        bounds = tuple(itertools.accumulate(sizes, initial=0))
        width = in_shape[axis]
        return Pieces(
            tuple(
                self._range(node, value, width, a, b, bounds) for a, b in itertools.pairwise(bounds)
            )
        )

    def _whole_again(self, parts: list[tuple[Units, int]]) -> Space | None:
        """The space whose ranges ``parts`` hold, in order and all of them (a ``cat`` of
        the ranges a ``split`` gave, each after per-unit ops), or None."""
        if any(units.block != 1 or units.repeat != 1 for units, _ in parts):
            return None
        held = [(first, units.space.root()) for units, first in parts]
        for space in {id(s.root()): s.root() for s in self.cut_spaces}.values():
            ranges = [(first, piece.root()) for first, piece in space.pieces]
            if len(ranges) == len(held) and all(
                a == b and p is q for (a, p), (b, q) in zip(ranges, held, strict=True)
            ):
                return space
        return None

    def _spread_pieces(self, attention: set[int]) -> None:
        """Hand each cut space's tensors to its ranges, each from its first unit on,
        until no cut space holds any (a range that is itself cut hands them on)."""
        moved = True
        while moved:
            moved = False
            for space in {id(s.root()): s.root() for s in self.cut_spaces}.values():
                if not (space.producers or space.outgoing or space.carried or space.ops):
                    continue
                if id(space) in attention or any(
                    id(piece.root()) in attention for _, piece in space.pieces
                ):
                    raise unsupported(
                        f"the units of `{space.origin}` are cut into ranges that attention "
                        "reads as heads, or are heads; canon cuts plain hidden units",
                        "split",
                        space.origin,
                    )
                for first, piece in space.pieces:
                    _take(piece.root(), space, first)
                space.producers, space.outgoing, space.carried, space.ops = [], [], [], []
                space.batchnorms, space.taps = {}, {}
                moved = True


def _take(piece: Space, whole: Space, first: int) -> None:
    """Give ``piece`` (the range of ``whole`` from unit ``first``) every tensor that moves
    with ``whole``, each now from that unit on, and what ``whole`` may not do: permute
    across its blocks (a GroupNorm's groups, met after the cut), or move at all (pinned)."""
    if whole.blocks > 1:
        width = whole.size // whole.blocks
        if first % width or piece.size % width:
            raise unsupported(
                f"the units of `{whole.origin}` are cut into ranges across the groups they "
                "permute within (a GroupNorm's, a grouped convolution's)",
                "split",
                whole.origin,
            )
        piece.blocks = math.lcm(piece.blocks, piece.size // width)
    if whole.heads_only:
        piece.pin()
    for made in whole.producers:
        if made.stride or made.head != 1 or made.bias_parts:
            raise unsupported(
                f"the outputs of `{made.path}` are cut into ranges and also interleaved",
                "split",
                made.path,
            )
        piece.producers.append(_shifted(made, first))
    piece.batchnorms |= whole.batchnorms
    for order, axis in whole.outgoing:
        if axis.repeat != 1 or axis.stride:
            raise unsupported(
                f"`{axis.name}` reads repeated units that are cut into ranges", "split", axis.name
            )
        piece.outgoing.append((order, replace(axis, start=axis.start + first * axis.block)))
    for carried in whole.carried:
        if carried.repeat != 1:
            raise unsupported(
                f"`{carried.name}` holds repeated units that are cut into ranges",
                "split",
                carried.name,
            )
        piece.carried.append(replace(carried, start=carried.start + first))
    piece.ops += whole.ops
    for tap in whole.taps.values():
        if not tap.stride:  # a tap of interleaved rows is read where the range's own is
            moved = replace(tap, start=tap.start + first * tap.block)
            piece.taps.setdefault(f"{tap.node}@{moved.start}", moved)
    piece.read_out = piece.read_out or whole.read_out
    if whole.created < piece.created:
        piece.created = whole.created


def _shifted(made: Made, first: int) -> Made:
    bias_start = None if made.bias_start is None else made.bias_start + first
    return replace(made, start=made.start + first, bias_start=bias_start)

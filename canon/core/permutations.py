"""Alignments (per-group permutations and signs) and how they move a state dict.

An :class:`Alignment` says, for every unit group, which old unit each new unit
is and, for ``sign`` groups, which units are negated. :func:`apply_alignment`
moves every tensor that carries a group's units along its axis;
:func:`moved` does the same for one tensor, leaving out chosen groups (what
weight matching needs for each step). :func:`solve_assignment` is the linear
assignment every matching method ends in.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from canon.core.auction import auction_assignment
from canon.core.host_reads import read
from canon.core.host_work import outside_python
from canon.core.lazy_similarity import Blocks
from canon.core.spec import Spec, UnitGroup, layout_of
from canon.core.units import permute_units, scale_units
from canon.errors import SpecMismatchError

__all__ = [
    "AUCTION_FROM",
    "MOVE_SLAB",
    "STRIP",
    "Alignment",
    "Moved",
    "UnitAxis",
    "apply_alignment",
    "assign",
    "best_in_rows",
    "check_alignment",
    "compose_alignments",
    "identity_alignment",
    "invert_alignment",
    "moved",
    "solve_assignment",
    "solve_blocks",
    "solve_heads",
    "through_reference",
    "unit_axes",
    "where_solved",
]


@dataclass(frozen=True, eq=False)
class Alignment:
    """Per group: the permutation (new unit k is old unit ``perm[k]``) and, for
    ``sign`` groups, the sign (+1 or -1) each unit is multiplied by after it."""

    permutations: Mapping[str, Tensor]
    signs: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def is_identity(self) -> bool:
        """Whether every permutation is the identity and every sign positive."""
        perms = all(
            bool(torch.equal(p.cpu(), torch.arange(len(p)))) for p in self.permutations.values()
        )
        return perms and all(bool((s > 0).all()) for s in self.signs.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable form (inverse of :meth:`from_dict`)."""
        return {
            "permutations": {k: v.tolist() for k, v in self.permutations.items()},
            "signs": {k: [int(x) for x in v.tolist()] for k, v in self.signs.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alignment:
        """Rebuild an alignment from :meth:`to_dict` output."""
        return cls(
            permutations={
                k: torch.tensor(v, dtype=torch.int64) for k, v in data["permutations"].items()
            },
            signs={k: torch.tensor(v, dtype=torch.float32) for k, v in data["signs"].items()},
        )


def identity_alignment(spec: Spec) -> Alignment:
    """The alignment that changes nothing: identity permutations, positive signs."""
    return Alignment(
        {g.name: torch.arange(g.size) for g in spec.groups},
        {g.name: torch.ones(g.size) for g in spec.groups if g.signed},
    )


def compose_alignments(first: Alignment, then: Alignment) -> Alignment:
    """The alignment that moves a state as ``first`` and then ``then`` do: new unit k is
    old unit ``first.perm[then.perm[k]]`` with the sign ``then.sign[k] *
    first.sign[then.perm[k]]`` (a missing sign is +1)."""
    perms, signs = {}, {}
    for name, p in then.permutations.items():
        perms[name] = first.permutations[name].to(p.device)[p]
        if name in first.signs or name in then.signs:
            s_first = first.signs.get(name)
            s_then = then.signs.get(name)
            own = torch.ones(len(p)) if s_first is None else s_first.to(p.device)[p]
            signs[name] = own if s_then is None else s_then.to(own.device) * own
    return Alignment(perms, signs)


def invert_alignment(alignment: Alignment) -> Alignment:
    """The alignment that undoes ``alignment``: moving a state by ``alignment`` and then by
    this one gives the state back (the inverse permutation; unit j takes the sign that
    its new place k = inverse[j] had)."""
    perms, signs = {}, {}
    for name, p in alignment.permutations.items():
        inverse = torch.empty_like(p)
        inverse[p] = torch.arange(len(p), device=p.device)
        perms[name] = inverse
        if name in alignment.signs:
            signs[name] = alignment.signs[name].to(p.device)[inverse]
    return Alignment(perms, signs)


def through_reference(b_to_reference: Alignment, a_to_reference: Alignment) -> Alignment:
    """The alignment of network b to network a from each one's alignment to a common
    reference: b moved into the reference's unit order, then out of it into a's."""
    return compose_alignments(b_to_reference, invert_alignment(a_to_reference))


#: Per device type, the size from which matrices on that device are solved there by
#: :func:`~canon.core.auction.auction_assignment` instead of by scipy on the host (absent:
#: never). None: ``benchmarks/bench_assign.py`` on an NVIDIA H200 found scipy on the host,
#: the copies included, faster at every size it measured (n = 256 ... 2048: 15-190x one
#: matrix at a time, 3.6-47x per matrix in batches of 8); the auction's thousands of
#: rounds, each then a few dozen kernel launches and three host syncs, cost more than the
#: whole solve. Rounds that wait for the device rarely kept those ratios (n = 512: 75x,
#: 2048: 16x): a round's few dozen launches, not its waits, are what it costs.
AUCTION_FROM: dict[str, int] = {}


def _on_device(similarity: Tensor, size: int) -> bool:
    """Whether ``size`` x ``size`` problems on ``similarity``'s device go to the auction."""
    start = AUCTION_FROM.get(similarity.device.type)
    return start is not None and size >= start


def where_solved(matrix: Tensor) -> Tensor:
    """``matrix`` (detached) where :func:`solve_assignment` solves it: where it is if the
    auction takes its size on its device (:data:`AUCTION_FROM`), else a float64 copy on
    the host (what scipy's solve reads), where more work on it (ties) launches nothing."""
    if _on_device(matrix, matrix.shape[0]):
        return matrix.detach()
    return read(matrix.detach()).to(torch.float64)


def best_in_rows(diagonal: Sequence[Tensor]) -> Tensor | None:
    """The permutation of ``len(diagonal) x m`` units, each moving within its block (block
    b's [m, m] similarity ``diagonal[b]``), that pairs every row with its largest entry,
    when each row's largest is strict and the rows of a block take distinct columns;
    else None. Then it is the one optimal assignment: every other pairs some row with
    less than its largest and none with more. Networks alike but for the order of their
    units (one fine-tuned from the other, a copy) give such matrices; solved here on
    their device with one read off it, not copied to the host and solved there."""
    m = diagonal[0].shape[0]
    if m < 2:
        return None
    stacked = torch.stack([d.detach() for d in diagonal]) if len(diagonal) > 1 else None
    values = stacked if stacked is not None else diagonal[0].detach()[None]
    top = values.topk(2, dim=2)
    columns = top.indices[:, :, 0]
    # every row's best strict, and every column some row's best: no two rows share one
    found = top.values[:, :, 0] > top.values[:, :, 1]
    found &= torch.zeros_like(found).scatter_(1, columns, True)
    if not bool(read(found.all())):  # one read
        return None
    offsets = torch.arange(len(diagonal), device=columns.device)[:, None] * m
    return (columns + offsets).reshape(-1)


def solve_assignment(similarity: Blocks, blocks: int = 1) -> Tensor:
    """The permutation ``perm`` maximizing sum_k similarity[k, perm[k]] (a linear assignment).

    Solved by ``scipy.optimize.linear_sum_assignment`` on the cost -similarity
    after subtracting each row's minimum and then each column's minimum. The
    reduction changes every assignment's total by the same constant, so the
    optimal assignments are exactly those of the raw matrix; it hands the
    shortest-augmenting-path solver a zero in every row and column, which
    makes it about a third faster on dense cosine matrices. Large matrices on a
    device listed in :data:`AUCTION_FROM` are solved where they are, by the
    batched auction (optimal to 1e-9 of the matrix's range). With ``blocks`` >
    1 each unit may only move within its contiguous block (GroupNorm groups,
    a mixture's experts): one assignment per diagonal block, the only blocks
    read (``similarity`` may be :class:`~canon.core.lazy_similarity.RowProducts`).
    A matrix whose rows' largest entries are strict and in distinct columns is solved
    by :func:`best_in_rows` alone.
    """
    n = similarity.shape[0]
    if blocks > 1:
        m = n // blocks
        return solve_blocks(
            [similarity[b * m : (b + 1) * m, b * m : (b + 1) * m] for b in range(blocks)]
        )
    whole = similarity[:, :] if not isinstance(similarity, Tensor) else similarity
    found = best_in_rows([whole])
    return found if found is not None else _solved(whole)


def _solved(whole: Tensor) -> Tensor:
    """:func:`solve_assignment` of one matrix by a solver: the auction where
    :data:`AUCTION_FROM` sends it, else scipy's on the host."""
    n = whole.shape[0]
    if _on_device(whole, n):
        return auction_assignment(whole)
    # negated into a new float64 array (numpy has no bfloat16; the caller's matrix stays)
    cost = np.ascontiguousarray(torch.neg(read(whole.detach()).to(torch.float64)).numpy())
    with outside_python():  # numpy and scipy: other threads may launch ops meanwhile
        cost -= cost.min(axis=1, keepdims=True)
        cost -= cost.min(axis=0, keepdims=True)
        _, cols = linear_sum_assignment(cost)
    return torch.from_numpy(cols).to(device=whole.device, dtype=torch.int64)


def solve_blocks(diagonal: Sequence[Tensor], first_best: bool = True) -> Tensor:
    """The permutation of ``blocks x m`` units, each moving only within its block, that
    maximizes the summed similarity: ``diagonal[b]`` is block b's [m, m] similarity; one
    assignment per block (one batched auction on a device listed in
    :data:`AUCTION_FROM`), unless :func:`best_in_rows` finds them all first (tried
    unless ``first_best`` is False: the caller tried it)."""
    found = best_in_rows(diagonal) if first_best else None
    if found is not None:
        return found
    m = diagonal[0].shape[0]
    offsets = torch.arange(len(diagonal), device=diagonal[0].device)[:, None] * m
    if _on_device(diagonal[0], m):
        solved = auction_assignment(torch.stack(list(diagonal)))
    else:
        solved = torch.stack([_solved(d) for d in diagonal])
    return (solved + offsets).reshape(-1)


def assign(groups: Sequence[UnitGroup], similarities: Sequence[Blocks]) -> list[Tensor]:
    """Each group's permutation maximizing its similarity: one linear assignment (within
    blocks), or, for the groups of one attention layer (:func:`~canon.core.spec.linked`),
    one order of the heads for all (:func:`solve_heads`)."""
    if groups[0].heads > 1:
        return solve_heads(similarities, groups[0].heads, [g.heads_only for g in groups])
    return [solve_assignment(similarities[0], groups[0].blocks)]


#: the most numbers of one similarity strip :func:`solve_heads` reads at a time (128 MiB
#: in float64), though never less than one head pair's block
STRIP = 1 << 24


def solve_heads(
    similarities: Sequence[Blocks], heads: int, whole: Sequence[bool] | None = None
) -> list[Tensor]:
    """The block-structured permutations maximizing the summed assignments of several
    groups whose units form ``heads`` blocks that move together (DESIGN §3b, attention).

    ``similarities[g]`` is group g's [heads * d_g, heads * d_g] matrix. Block b of
    the second network goes to block a of the first by one permutation for all
    groups, each group's units permuting within the block: the value of
    pairing (a, b) is the sum over groups of the best within-block assignment,
    and the pairing of blocks is the assignment maximizing that sum. A group
    marked in ``whole`` keeps its units in place within the block (rotary
    queries and keys): its value is the block's diagonal. Returns each group's
    permutation of all its units.

    Not every pair's assignment is solved. Each pair's value is first bounded from
    above by its block's row maxima summed (or its column maxima, the smaller): the
    pairing is solved on those bounds, the pairs it picks are solved exactly and
    their bounds replaced by their values, and so on until the pairing picks only
    pairs solved exactly. It then beats every other pairing, whose value is at most
    its bounds' sum: the pairing of all pairs solved, in a fraction of the solves.
    A matrix is read a strip of :data:`STRIP` numbers at a time (a head of the first
    network against some heads of the second), so it may be given lazily
    (:class:`~canon.core.lazy_similarity.RowProducts`): memory grows with one head's
    units times all units, not with all units squared.
    """
    fixed = list(whole) if whole is not None else [False] * len(similarities)
    value = torch.zeros(heads, heads, dtype=torch.float64)
    for similarity, kept in zip(similarities, fixed, strict=True):
        _bound_head_pairs(similarity, heads, kept, value)
    stores = [_Assignments(s.shape[0] // heads) for s in similarities]
    solved: dict[tuple[int, int], int] = {}  # a pair of heads: where its assignments are
    while True:
        pairing = solve_assignment(value).tolist()
        missing = [(a, b) for a, b in enumerate(pairing) if (a, b) not in solved]
        if not missing:
            break
        for a, b in missing:
            total = 0.0
            for similarity, kept, store in zip(similarities, fixed, stores, strict=True):
                perm, part = _solve_head_pair(similarity, heads, kept, a, b)
                solved[a, b] = store.add(perm)  # the same place in every group's store
                total += part
            value[a, b] = total
    perms = []
    for similarity, store in zip(similarities, stores, strict=True):
        parts = [b * store.d + store[solved[a, b]] for a, b in enumerate(pairing)]
        perms.append(torch.cat(parts).to(similarity.device))
    return perms


class _Assignments:
    """The assignments of d units that :func:`solve_heads` keeps, one per pair of heads
    solved, in preallocated chunks: many small tensors kept among a solve's large
    temporaries fragment the heap (2,000 of them held a GiB of resident memory)."""

    CHUNK = 1 << 20  # units per chunk

    def __init__(self, d: int) -> None:
        self.d = d
        self.dtype = torch.int16 if d <= 2**15 else torch.int64
        self.rows = max(1, self.CHUNK // max(d, 1))
        self.chunks: list[Tensor] = []
        self.count = 0

    def add(self, perm: Tensor) -> int:
        """Keep ``perm``; returns where it is."""
        if self.count % self.rows == 0:
            self.chunks.append(torch.empty(self.rows, self.d, dtype=self.dtype))
        self.chunks[-1][self.count % self.rows] = perm
        self.count += 1
        return self.count - 1

    def __getitem__(self, index: int) -> Tensor:
        return self.chunks[index // self.rows][index % self.rows].long()


def _bound_head_pairs(similarity: Blocks, heads: int, kept: bool, value: Tensor) -> None:
    """Add to ``value[a, b]``, for every pair of heads, an upper bound of the group's best
    assignment of head b's units to head a's: the smaller of the block's row maxima
    summed and its column maxima summed (with ``kept``: the block's diagonal summed,
    exactly its value). Read a strip of at most :data:`STRIP` numbers at a time."""
    d = similarity.shape[0] // heads
    span = max(1, STRIP // max(d * d, 1))  # heads of the second network per strip
    for a in range(heads):
        for first in range(0, heads, span):
            last = min(heads, first + span)
            strip = similarity[a * d : (a + 1) * d, first * d : last * d].detach().double()
            blocks = strip.reshape(d, last - first, d).transpose(0, 1)  # [b, row, column]
            if kept:
                bounds = blocks.diagonal(dim1=1, dim2=2).sum(1)
            elif d == 0:
                bounds = torch.zeros(last - first, dtype=torch.float64, device=strip.device)
            else:
                bounds = torch.minimum(blocks.amax(2).sum(1), blocks.amax(1).sum(1))
            value[a, first:last] += bounds.cpu()


def _solve_head_pair(
    similarity: Blocks, heads: int, kept: bool, a: int, b: int
) -> tuple[Tensor, float]:
    """The group's best assignment of head b's units to head a's (with ``kept``: each
    unit to its own place) and its value."""
    d = similarity.shape[0] // heads
    block = where_solved(similarity[a * d : (a + 1) * d, b * d : (b + 1) * d]).double()
    perm = torch.arange(d, device=block.device) if kept else solve_assignment(block)
    rows = torch.arange(d, device=block.device)
    return perm.cpu(), float(block[rows, perm].sum())


@dataclass(frozen=True)
class UnitAxis:
    """One axis of one tensor that carries a group's units; ``signed`` when a sign flip
    of the units negates the tensor's slices."""

    group: str
    axis: int
    block: int
    signed: bool
    start: int = 0
    repeat: int = 1
    head: int = 1
    stride: int = 0
    groups: int = 1


def unit_axes(spec: Spec) -> Mapping[str, tuple[UnitAxis, ...]]:
    """For every tensor that moves with some group: the unit axes it has (read-only: made
    once per spec, which every move of a network reads)."""
    key = id(spec)
    held = _AXES.get(key)
    if held is not None and held[0]() is spec:
        return held[1]
    found = MappingProxyType(_unit_axes(spec))
    _AXES[key] = (weakref.ref(spec, lambda _: _AXES.pop(key, None)), found)
    return found


#: :func:`unit_axes` of the specs alive, by id (a spec's hash reads all of it)
_AXES: dict[int, tuple[weakref.ref[Spec], Mapping[str, tuple[UnitAxis, ...]]]] = {}


def _unit_axes(spec: Spec) -> dict[str, tuple[UnitAxis, ...]]:
    axes: dict[str, list[UnitAxis]] = {}
    for group in spec.groups:
        odd = {name for p in group.producers for name in p.odd}
        for t in group.tensors:
            # a linear group's units are projections' rows and columns: all of them negate
            # (not what it only permutes: a gate's rows on attention's output)
            signed = (group.symmetry == "linear" and t.role != "carried") or (
                group.symmetry == "sign" and (t.role == "outgoing" or t.name in odd)
            )
            axes.setdefault(t.name, []).append(
                UnitAxis(
                    group.name,
                    t.axis,
                    t.block,
                    signed,
                    t.start,
                    t.repeat,
                    t.head,
                    t.stride,
                    t.groups,
                )
            )
    return {name: tuple(found) for name, found in axes.items()}


def _move(t: Tensor, axis: UnitAxis, alignment: Alignment) -> Tensor:
    perm = alignment.permutations[axis.group].to(t.device)
    layout = layout_of(axis)
    out = permute_units(t, axis.axis, perm, **layout)
    sign = alignment.signs.get(axis.group) if axis.signed else None
    if sign is None:
        return out
    # ``out`` is a new tensor (index_select copies): negate its units where it is
    return scale_units(out, axis.axis, sign.to(t.device), **layout, in_place=True)


#: elements above which a tensor moved along several axes is copied once: its later axes
#: are reordered in the copy a slab at a time (a wide layer's second full copy would
#: double the move's memory; a small tensor's slabs would only add calls)
MOVE_SLAB = 1 << 20


def moved(
    t: Tensor,
    axes: tuple[UnitAxis, ...],
    alignment: Alignment,
    skip: UnitAxis | None = None,
) -> Tensor:
    """Tensor ``t`` moved along each of its unit ``axes`` by ``alignment``, except ``skip``."""
    todo = [axis for axis in axes if axis != skip]
    if len(todo) > 1 and t.numel() > MOVE_SLAB:
        # the first axis copies; the others reorder that copy in slabs along dimension 0,
        # contiguous, so an axis-0 move goes first (the axes' moves commute)
        todo.sort(key=lambda axis: axis.axis != 0)
        out = _move(t, todo[0], alignment)
        for axis in todo[1:]:
            _move_in_place(out, axis, alignment)
        return out
    for axis in todo:
        t = _move(t, axis, alignment)
    return t


def _move_in_place(t: Tensor, axis: UnitAxis, alignment: Alignment) -> None:
    """:func:`_move` of ``t`` (a copy of the caller's own) written back into ``t``, one
    slab of about :data:`MOVE_SLAB` elements along another dimension at a time."""
    if t.ndim < 2 or axis.groups > 1:  # a grouped axis spans every row: whole
        t.copy_(_move(t, axis, alignment))
        return
    along = 0 if axis.axis != 0 else 1
    size = t.shape[along]
    step = max(1, MOVE_SLAB * size // t.numel())
    for start in range(0, size, step):
        slab = t.narrow(along, start, min(step, size - start))
        slab.copy_(_move(slab, axis, alignment))


def check_alignment(alignment: Alignment, spec: Spec) -> None:
    """Reject an alignment that lacks a permutation of the right size for some group."""
    for group in spec.groups:
        perm = alignment.permutations.get(group.name)
        if perm is None or perm.shape != (group.size,):
            raise SpecMismatchError(
                f"alignment has no permutation of size {group.size} for group `{group.name}`"
            )


class Moved(Mapping[str, Tensor]):
    """``state`` seen through ``alignment``: each tensor moved as :func:`apply_alignment`
    moves it, when it is read. Nothing is copied ahead, so a pass over the tensors holds
    one moved tensor at a time."""

    def __init__(self, state: Mapping[str, Tensor], alignment: Alignment, spec: Spec) -> None:
        check_alignment(alignment, spec)
        self.state = state
        self.alignment = alignment
        self.axes = unit_axes(spec)

    def __getitem__(self, name: str) -> Tensor:
        tensor = self.state[name]
        axes = self.axes.get(name)
        return moved(tensor, axes, self.alignment) if axes else tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def __len__(self) -> int:
        return len(self.state)


def apply_alignment(
    state: Mapping[str, Tensor], alignment: Alignment, spec: Spec, *, in_place: bool = False
) -> dict[str, Tensor]:
    """``state`` with every group's tensors permuted (and sign-flipped) by ``alignment``.

    A sign flip negates the unit's weights and biases in every producer (and,
    after BatchNorm, its running mean and beta, so the BN output is negated)
    and its outgoing weights: the same function for odd activations. With
    ``in_place`` (``state`` a dict the caller gives up) each entry is replaced
    as it is moved, so a tensor's old values are freed as soon as nothing else
    holds them: at most one tensor more than the network at any time.
    """
    check_alignment(alignment, spec)
    out = state if in_place and isinstance(state, dict) else dict(state)
    for name, axes in unit_axes(spec).items():
        out[name] = moved(out[name], axes, alignment)
    return out

"""Ties in a matching: units that the similarity cannot tell apart.

Units of one network whose compared vectors are equal (zero incoming weights and a
constant output: pruned rows, BatchNorm gamma 0; copies of one unit; constant
activations) have equal similarities with every unit of the other network, so a linear
assignment may pair them either way at the same value, and which way the solver picks
depends on the order the units come in. A canonical form must not depend on that order:
a network and a permuted copy of it have to align to the same state. So the
assignment picks, among the optimal pairings, the one that pairs the tied units with
the partners nearest by their other weights: everything that moves with a unit
(outgoing weights included), each tensor's slice summarized by statistics of its
absolute values, which no other group's permutation or sign flip changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from canon.core.lazy_similarity import Blocks
from canon.core.permutations import assign, best_in_rows, solve_blocks, where_solved
from canon.core.spec import UnitGroup, layout_of
from canon.core.units import unit_slices

__all__ = ["TIE_BREAK", "assign_settled", "identical_rows", "settled"]


#: the weight of the descriptors' distances (scaled to [0, 1]) in the tied rows and
#: columns of a similarity: far below any difference that is not a tie (cosines and
#: correlations lie in [-1, 1]), far above float64's rounding and the device solver's
#: tolerance (1e-9 of the matrix's range)
TIE_BREAK = 1e-6


def assign_settled(
    groups: Sequence[UnitGroup],
    similarities: Sequence[Blocks],
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
) -> list[Tensor]:
    """:func:`~canon.core.permutations.assign`; a group matched on its own is assigned
    by its similarity with ties settled (:func:`settled`), within each of its blocks
    where its units permute in blocks (the only parts of the matrix then read). Heads
    matched as blocks are assigned as they are."""
    if len(groups) > 1 or groups[0].heads > 1:
        return assign(groups, similarities)
    group, similarity = groups[0], similarities[0]
    m = group.size // max(group.blocks, 1)
    starts = [b * m for b in range(group.blocks)]
    blocks = [similarity[at : at + m, at : at + m] for at in starts]
    device = blocks[0].device
    # rows that each have a strict best of their own have no ties: solved where they are
    found = best_in_rows(blocks)
    if found is not None:
        return [found]
    # ties are looked for where the blocks are solved (the host, but for the auction)
    diagonal = [
        settled(where_solved(block), state, reference, group, at)
        for block, at in zip(blocks, starts, strict=True)
    ]
    return [solve_blocks(diagonal, first_best=False).to(device)]


def settled(
    similarity: Tensor,
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    group: UnitGroup,
    first: int = 0,
) -> Tensor:
    """``similarity`` (C[k, j]: reference unit k against unit j of ``state``, the group's
    units from ``first`` on) where it has ties: in each row of a class of equal rows and
    each column of a class of equal columns, minus :data:`TIE_BREAK` times the squared
    distance of the two units' descriptors (:func:`_descriptors`) over the largest of
    those distances. Without ties, ``similarity`` itself.

    Among the assignments optimal for ``similarity``, the one then found is the one
    whose tied units' partners are nearest by descriptors: a function of the weights
    alone, not of the order the units come in.
    """
    if not _shares_sums(similarity):  # no ties (the common case): one read
        return similarity
    rows, columns = identical_rows(similarity), identical_rows(similarity.T)
    if not rows and not columns:
        return similarity
    every = torch.arange(similarity.shape[0]) + first
    theirs, mine = _descriptors(reference, group, every), _descriptors(state, group, every)
    tied_rows = torch.cat(rows) if rows else every[:0]
    tied_columns = torch.cat(columns) if columns else every[:0]
    far_rows = _squared_distances(theirs[tied_rows], mine)
    far_columns = _squared_distances(theirs, mine[tied_columns])
    largest = max((float(d.max()) for d in (far_rows, far_columns) if d.numel()), default=0.0)
    step = TIE_BREAK / largest if largest > 0 else 0.0
    out = similarity.detach().to("cpu", torch.float64, copy=True)
    out[tied_rows] -= step * far_rows
    out[:, tied_columns] -= step * far_columns
    return out.to(similarity.device)


def _shares_sums(matrix: Tensor) -> bool:
    """Whether two rows, or two columns, of ``matrix`` have equal sums (as
    :func:`identical_rows` sums them): rows or columns that are equal do."""
    values = matrix.detach()
    found = [_repeats(values.sum(1)), _repeats(values.T.sum(1))]
    return bool(torch.stack(found).any())


def _repeats(values: Tensor) -> Tensor:
    """Whether some number occurs twice in the vector ``values`` (a boolean scalar)."""
    ordered = values.sort().values
    return (ordered[1:] == ordered[:-1]).any()


def identical_rows(matrix: Tensor) -> list[Tensor]:
    """The classes (two or more rows each) of bitwise-equal rows of ``matrix``."""
    if matrix.shape[0] < 2 or matrix.numel() == 0:
        return []
    values = matrix.detach()
    # equal rows have equal sums (each row summed in the same order): only rows that
    # share a sum are compared
    _, inverse, counts = torch.unique(values.sum(1), return_inverse=True, return_counts=True)
    classes = []
    for candidate in torch.nonzero(counts > 1).flatten().tolist():
        members = torch.nonzero(inverse == candidate).flatten().tolist()
        while len(members) > 1:
            first = values[members[0]]
            same = [m for m in members if torch.equal(values[m], first)]
            if len(same) > 1:
                classes.append(torch.tensor(same))
            members = [m for m in members if m not in same]
    return classes


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """[len(a), len(b)] squared Euclidean distances, each from its own differences (the
    same number whatever rows come with it)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()


def _descriptors(net: Mapping[str, Tensor], group: UnitGroup, units: Tensor) -> Tensor:
    """One row per unit in ``units``: of its slice of every tensor that moves with the
    group, the mean, root mean square and largest of the absolute values, in float64
    (blind to other groups' permutations and signs, and to the unit's own sign). Taken
    :data:`_SLAB` numbers at a time: a wide layer is never copied whole in float64."""
    parts = []
    for t in group.tensors:
        rows = unit_slices(net[t.name], t.axis, group.size, **layout_of(t)).detach()
        if rows.shape[1] == 0:
            continue
        step = max(1, _SLAB // rows.shape[1])
        stats = []
        for chunk in torch.split(units.to(rows.device), step):
            picked = rows[chunk].abs()
            stats.append(
                torch.stack(
                    [
                        picked.mean(1, dtype=torch.float64),
                        picked.square().mean(1, dtype=torch.float64).sqrt(),
                        picked.amax(1).double(),
                    ],
                    1,
                ).cpu()
            )
        parts.append(torch.cat(stats))
    return torch.cat(parts, 1) if parts else torch.zeros(len(units), 1, dtype=torch.float64)


#: numbers of a tensor's unit slices summarized at a time
_SLAB = 1 << 22

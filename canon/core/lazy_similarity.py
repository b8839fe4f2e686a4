"""Similarity matrices too large to hold whole, taken a block at a time.

A group whose units permute in blocks (a mixture's experts, GroupNorm groups) or as
heads (attention, experts moving with their router's rows) is assigned block by
block: within a block, or between a head of one network and a head of the other.
The whole units x units matrix is then never needed, and for a mixture of 64
experts of 1,024 units it would not fit (2**32 numbers). :class:`RowProducts` gives
such a matrix as the products of two row sets, computing only the block asked for;
:func:`~canon.core.permutations.solve_heads` and
:func:`~canon.core.permutations.solve_assignment` read any matrix through
:class:`Blocks`, which a tensor is too.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

__all__ = ["Blocks", "RowProducts", "magnitude", "matched", "row_norms", "structured"]


class Blocks(Protocol):
    """A square similarity matrix read a block at a time (a tensor is one)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """(units, units)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the blocks are computed."""
        ...

    def __getitem__(self, index: tuple[slice, slice]) -> Tensor:
        """The block of rows ``index[0]`` and columns ``index[1]``."""
        ...


class RowProducts:
    """S[k, j] = <left[k], right[j]> / (left_norms[k] * right_norms[j]), or its absolute
    value with ``magnitude``: cosines of two row sets (norms: the rows' own) or
    correlations of standardized rows (norms: the square root of their length).

    A block is one matrix product of the rows it spans, in the rows' dtype and on
    their device; the norms divide it afterwards, so no normalized copy of either
    row set is made.
    """

    def __init__(
        self,
        left: Tensor,
        right: Tensor,
        left_norms: Tensor,
        right_norms: Tensor,
        *,
        magnitude: bool = False,
    ) -> None:
        if left.shape[1:] != right.shape[1:]:
            raise ValueError(
                f"row products need rows of one length, got {tuple(left.shape)} and "
                f"{tuple(right.shape)}"
            )
        self.left, self.right = left, right
        self.left_norms, self.right_norms = left_norms, right_norms
        self.magnitude = magnitude

    @classmethod
    def cosines(cls, left: Tensor, right: Tensor, *, magnitude: bool = False) -> RowProducts:
        """The cosines of ``left``'s rows with ``right``'s (a zero row: 0)."""
        return cls(left, right, row_norms(left), row_norms(right), magnitude=magnitude)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows of ``left``, rows of ``right``)."""
        return (self.left.shape[0], self.right.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the blocks are computed."""
        return self.left.device

    def __getitem__(self, index: tuple[slice, slice]) -> Tensor:
        rows, cols = index
        block = (self.left[rows] @ self.right[cols].T).div_(self.left_norms[rows].unsqueeze(1))
        block.div_(self.right_norms[cols].unsqueeze(0))
        return block.abs_() if self.magnitude else block

    def matched(self, perm: Tensor) -> Tensor:
        """S[k, perm[k]] for every k, signed whatever ``magnitude`` is: one inner product
        per row, not a block."""
        perm = perm.to(self.device)
        products = (self.left * self.right[perm]).sum(1)
        return products / (self.left_norms * self.right_norms[perm])


def matched(similarity: Tensor | RowProducts, perm: Tensor) -> Tensor:
    """similarity[k, perm[k]] for every k, of a matrix or of :class:`RowProducts`."""
    if isinstance(similarity, RowProducts):
        return similarity.matched(perm)
    return similarity.gather(1, perm.to(similarity.device).unsqueeze(1)).squeeze(1)


def magnitude(similarity: Tensor | RowProducts) -> Tensor | RowProducts:
    """|similarity|, elementwise (of :class:`RowProducts`: taken as each block is)."""
    if isinstance(similarity, RowProducts):
        return RowProducts(
            similarity.left,
            similarity.right,
            similarity.left_norms,
            similarity.right_norms,
            magnitude=True,
        )
    return similarity.abs()


def structured(heads: int, blocks: int) -> bool:
    """Whether a group is assigned a block at a time: its units permute as heads or
    within blocks, so its whole similarity matrix is never needed."""
    return heads > 1 or blocks > 1


def row_norms(rows: Tensor) -> Tensor:
    """Each row's L2 norm, at least F.normalize's epsilon (a zero row's products stay 0)."""
    norms: Tensor = torch.linalg.vector_norm(rows, dim=1).clamp_min(1e-12)
    return norms

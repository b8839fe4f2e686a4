"""Similarities read a block at a time give the assignments of the whole matrices.

A group that permutes as heads or in blocks (attention, a mixture's experts, GroupNorm
groups) is assigned block by block, so its similarity may be given lazily
(:class:`RowProducts`) and read a strip at a time (:data:`permutations.STRIP`). These
tests hold the strip and lazy readings to the whole matrix's, and the whole matrix's to
brute force over every block-structured permutation.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from canon.core import permutations
from canon.core.lazy_similarity import RowProducts, magnitude, matched
from canon.core.permutations import solve_assignment, solve_heads


def _rows(seed: int, n: int, f: int, zero: bool = False) -> Tensor:
    rows = torch.randn(n, f, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if zero:
        rows[n // 2] = 0.0  # a dead unit: cosine 0 with everything
    return rows


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 7),
    n=st.integers(1, 7),
    f=st.integers(1, 5),
    zero=st.booleans(),
    absolute=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_row_products_are_the_cosines(
    m: int, n: int, f: int, zero: bool, absolute: bool, seed: int
) -> None:
    """Any block of :class:`RowProducts` is that block of the cosine matrix (its absolute
    value with ``magnitude``); ``matched`` reads the signed cosines a permutation pairs."""
    left, right = _rows(seed, m, f, zero), _rows(seed + 1, n, f)
    cosines = F.normalize(left, dim=1) @ F.normalize(right, dim=1).T
    products = RowProducts.cosines(left, right)
    read = magnitude(products) if absolute else products
    expected = cosines.abs() if absolute else cosines
    torch.testing.assert_close(read[:, :], expected, rtol=0, atol=1e-12)
    rows, cols = slice(m // 3, m), slice(n // 2, n)
    torch.testing.assert_close(read[rows, cols], expected[rows, cols], rtol=0, atol=1e-12)
    if m == n:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(
            matched(read, perm), cosines[torch.arange(n), perm], rtol=0, atol=1e-12
        )


def _block_permutations(heads: int, d: int) -> list[Tensor]:
    """Every permutation of ``heads`` blocks of ``d`` units that moves blocks as wholes and
    units within their block."""
    found = []
    inner = list(itertools.permutations(range(d)))
    for order in itertools.permutations(range(heads)):
        for within in itertools.product(inner, repeat=heads):
            found.append(
                torch.tensor([b * d + i for b, w in zip(order, within, strict=True) for i in w])
            )
    return found


def _total(similarity: Tensor, perm: Tensor) -> float:
    return float(similarity[torch.arange(len(perm)), perm].sum())


@settings(max_examples=30, deadline=None)
@given(
    heads=st.integers(1, 3),
    d=st.integers(1, 3),
    strip=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_heads_read_by_strips_are_the_best_block_permutation(
    heads: int, d: int, strip: int, seed: int
) -> None:
    """solve_heads on a lazy similarity, read a few numbers at a time, finds the
    permutation the whole matrix gives, and no block-structured permutation does better."""
    n = heads * d
    lazy = RowProducts.cosines(_rows(seed, n, 4), _rows(seed + 1, n, 4))
    whole = lazy[:, :]
    expected = solve_heads([whole], heads)[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(permutations, "STRIP", strip)
        found = solve_heads([lazy], heads)[0]
    assert torch.equal(found, expected)
    best = max(_total(whole, p) for p in _block_permutations(heads, d))
    assert _total(whole, found) == pytest.approx(best, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(heads=st.integers(2, 4), strip=st.integers(1, 200), seed=st.integers(0, 2**16))
def test_linked_groups_read_by_strips_move_heads_together(
    heads: int, strip: int, seed: int
) -> None:
    """Two groups sharing their heads' order (one kept within its heads, as rotary
    queries are), one of them lazy: the same permutations as from the whole matrices."""
    sizes = (3, 2)
    lazy = [
        RowProducts.cosines(_rows(seed + i, heads * d, 3), _rows(seed + 9 + i, heads * d, 3))
        for i, d in enumerate(sizes)
    ]
    whole = [s[:, :] for s in lazy]
    expected = solve_heads(whole, heads, [False, True])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(permutations, "STRIP", strip)
        found = solve_heads([lazy[0], whole[1]], heads, [False, True])
    for got, want in zip(found, expected, strict=True):
        assert torch.equal(got, want)
    d = sizes[1]  # the kept group's units stay in place within their heads
    assert torch.equal(found[1] % d, torch.arange(heads * d) % d)


@settings(max_examples=30, deadline=None)
@given(blocks=st.integers(1, 4), m=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_blocks_are_assigned_from_their_own_diagonal_block(blocks: int, m: int, seed: int) -> None:
    """Units that move only within their block: each block's best assignment, read from
    the diagonal blocks of a lazy similarity alone."""
    n = blocks * m
    lazy = RowProducts.cosines(_rows(seed, n, 3), _rows(seed + 1, n, 3))
    whole = lazy[:, :]
    found = solve_assignment(lazy, blocks)
    assert torch.equal(found, solve_assignment(whole, blocks))
    for b in range(blocks):
        part = slice(b * m, (b + 1) * m)
        within = found[part] - b * m
        assert bool(((within >= 0) & (within < m)).all())
        best = max(
            _total(whole[part, part], torch.tensor(p)) for p in itertools.permutations(range(m))
        )
        assert _total(whole[part, part], within) == pytest.approx(best, abs=1e-12)


def _every_pair_solved(similarity: Tensor, heads: int) -> Tensor:
    """The block-structured optimum the long way: scipy on every pair of heads, then on
    the pairing of heads by those values (an implementation apart from canon's)."""
    d = similarity.shape[0] // heads
    blocks = similarity.reshape(heads, d, heads, d).permute(0, 2, 1, 3).numpy()
    inner = [[linear_sum_assignment(blocks[a, b], maximize=True)[1] for b in range(heads)]
             for a in range(heads)]  # fmt: skip
    values = np.array(
        [
            [blocks[a, b][np.arange(d), inner[a][b]].sum() for b in range(heads)]
            for a in range(heads)
        ]
    )
    pairing = linear_sum_assignment(values, maximize=True)[1]
    return torch.tensor(np.concatenate([b * d + inner[a][b] for a, b in enumerate(pairing)]))


@settings(max_examples=40, deadline=None)
@given(
    heads=st.integers(2, 9),
    d=st.integers(1, 6),
    noise=st.sampled_from([0.0, 0.1, 0.5, 3.0]),
    seed=st.integers(0, 2**16),
)
def test_heads_solved_from_bounds_are_the_optimum_of_every_pair_solved(
    heads: int, d: int, noise: float, seed: int
) -> None:
    """solve_heads solves the pairs of heads its bounds leave open, not all of them: on
    a copy whose heads and units were shuffled, noise added (from none to swamping),
    it finds the permutation that solving every pair finds."""
    n = heads * d
    gen = torch.Generator().manual_seed(seed)
    left = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    shuffled = torch.cat(
        [h * d + torch.randperm(d, generator=gen) for h in torch.randperm(heads, generator=gen)]
    )
    right = left[shuffled] + noise * torch.randn(n, 5, generator=gen, dtype=torch.float64)
    similarity = RowProducts.cosines(left, right)[:, :]
    found = solve_heads([similarity], heads)[0]
    assert torch.equal(found, _every_pair_solved(similarity, heads))
    if noise == 0.0:
        assert torch.equal(right[found], left)


@settings(max_examples=8, deadline=None)
@given(heads=st.integers(2, 6), d=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_head_pairs_solved_where_the_auction_runs_agree(heads: int, d: int, seed: int) -> None:
    """With the auction configured for CPU blocks (as it is for CUDA ones from its
    crossover size), the pairs of heads are solved by it, on the strips' device, and
    give scipy's permutation."""
    n = heads * d
    lazy = RowProducts.cosines(_rows(seed, n, 4), _rows(seed + 1, n, 4))
    expected = solve_heads([lazy], heads)[0]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(permutations.AUCTION_FROM, "cpu", 2)
        found = solve_heads([lazy], heads)[0]
    assert torch.equal(found, expected)

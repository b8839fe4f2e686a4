"""Assignments whose every row takes its own strict best, found without a solver
(canon.core.permutations.best_in_rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from canon.core import permutations
from canon.core.permutations import best_in_rows, solve_assignment


def _planted(n: int, seed: int, noise: float, blocks: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines between a layer's rows and a noisy copy of them in another order (within
    ``blocks``), and the order: what two networks alike but for their units' order give."""
    g = torch.Generator().manual_seed(seed)
    m = n // blocks
    order = torch.cat([b * m + torch.randperm(m, generator=g) for b in range(blocks)])
    a = torch.nn.functional.normalize(torch.randn(n, 48, generator=g, dtype=torch.float64), dim=1)
    b = a[order] + noise * torch.randn(n, 48, generator=g, dtype=torch.float64) / 7
    b = torch.nn.functional.normalize(b, dim=1)
    # row k: unit k of the first against every unit of the second; its match is inverse[k]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n)
    return a @ b.T, inverse


def _scipy(similarity: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(linear_sum_assignment(similarity.numpy(), maximize=True)[1])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 10_000), noise=st.floats(0.0, 3.0))
def test_rows_taking_distinct_strict_bests_are_the_optimal_assignment(n, seed, noise):
    """Whenever it answers, the answer is the assignment scipy finds, and it answers
    exactly when every row's best is strict and no two rows share it."""
    similarity, _ = _planted(n, seed, noise)
    found = best_in_rows([similarity])
    top = similarity.topk(2, dim=1)
    own = bool((top.values[:, 0] > top.values[:, 1]).all())
    distinct = len(set(top.indices[:, 0].tolist())) == n
    assert (found is not None) == (own and distinct)
    if found is not None:
        assert torch.equal(found, _scipy(similarity))


def test_a_planted_order_is_found_and_blocks_keep_their_units():
    """Alike networks (a noisy copy) give their order back; within GroupNorm-like blocks
    each unit stays in its block."""
    similarity, order = _planted(256, 0, 0.5)
    assert torch.equal(best_in_rows([similarity]), order)
    similarity, order = _planted(64, 1, 0.5, blocks=4)
    diagonal = [similarity[b * 16 : (b + 1) * 16, b * 16 : (b + 1) * 16] for b in range(4)]
    assert torch.equal(best_in_rows(diagonal), order)
    assert torch.equal(solve_assignment(similarity, blocks=4), order)


@pytest.mark.parametrize(
    "rows",
    [
        [[1.0, 1.0, 0.0], [0.0, 0.5, 2.0], [3.0, 0.0, 0.0]],  # a row's best is tied
        [[2.0, 1.0, 0.0], [0.0, 0.5, 2.0], [3.0, 0.0, 0.0]],  # two rows share a best
        [[5.0]],  # one unit: nothing to look for
    ],
)
def test_a_tie_or_a_shared_best_is_left_to_the_solver(rows):
    assert best_in_rows([torch.tensor(rows)]) is None


def test_the_solver_is_not_reached_when_every_row_takes_its_own_best(monkeypatch):
    """solve_assignment answers a planted order without the host's solver, and reaches
    it when two rows want one column."""
    similarity, order = _planted(128, 3, 0.3)
    solved = []
    real = permutations.linear_sum_assignment
    monkeypatch.setattr(
        permutations, "linear_sum_assignment", lambda c: solved.append(c.shape) or real(c)
    )
    assert torch.equal(solve_assignment(similarity), order)
    assert solved == []
    shared = similarity.clone()
    shared[1] = shared[0]  # two rows alike: both want one column
    found = solve_assignment(shared)
    assert solved == [(128, 128)]
    best = real(-np.asarray(shared))[1]
    rows = torch.arange(128)
    assert torch.isclose(shared[rows, found].sum(), shared[rows, torch.from_numpy(best)].sum())

"""The batched auction solver against scipy's exact linear assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from torch.utils._python_dispatch import TorchDispatchMode

from canon.core import permutations
from canon.core.auction import auction_assignment
from canon.core.permutations import solve_assignment


def _scipy(matrix: torch.Tensor) -> np.ndarray:
    return linear_sum_assignment(matrix.double().numpy(), maximize=True)[1]


def _total(matrix: torch.Tensor, perm: torch.Tensor | np.ndarray) -> float:
    cols = torch.as_tensor(np.asarray(perm))
    return float(matrix.double()[torch.arange(len(cols)), cols].sum())


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 24),
    st.integers(1, 3),
    st.integers(0, 2**31 - 1),
    st.sampled_from([torch.float32, torch.float64]),
)
def test_auction_gives_scipys_assignment_on_continuous_matrices(n, batch, seed, dtype):
    """Random continuous matrices have one optimal assignment: the auction finds scipy's,
    for every matrix of a batch, as a permutation."""
    g = torch.Generator().manual_seed(seed)
    matrices = torch.randn(batch, n, n, generator=g, dtype=torch.float64).to(dtype)
    perms = auction_assignment(matrices)
    assert perms.shape == (batch, n) and perms.dtype == torch.int64
    for matrix, perm in zip(matrices, perms, strict=True):
        assert sorted(perm.tolist()) == list(range(n))
        assert np.array_equal(perm.numpy(), _scipy(matrix))


@pytest.mark.slow  # 40 auctions against scipy: seconds; CI runs it
@settings(max_examples=40, deadline=None)
@given(st.integers(2, 20), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_auction_is_optimal_on_matrices_full_of_ties(n, levels, seed):
    """Small integers make many optimal assignments: the auction's total is the optimum
    exactly (its bound, tolerance x range, is below one unit), and the answer is the same
    on every call."""
    g = torch.Generator().manual_seed(seed)
    matrix = torch.randint(0, levels + 1, (n, n), generator=g).double()
    perm = auction_assignment(matrix)
    assert _total(matrix, perm) == _total(matrix, _scipy(matrix))
    assert torch.equal(auction_assignment(matrix), perm)


def test_auction_recovers_a_planted_permutation_at_width_256():
    """The cosine matrix of a random network layer against its row-permuted copy (a little
    noise added) is solved by the planted permutation."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(256, 64, generator=g)
    planted = torch.randperm(256, generator=g)
    copy = w[planted] + 0.05 * torch.randn(256, 64, generator=g)
    cosine = torch.nn.functional.normalize(w, dim=1) @ torch.nn.functional.normalize(copy, dim=1).T
    perm = auction_assignment(cosine)
    assert torch.equal(planted[perm], torch.arange(256))


def test_auction_keeps_leading_axes_and_trivial_sizes():
    """[..., n, n] gives [..., n]; sizes 0 and 1 and constant matrices need no bids."""
    g = torch.Generator().manual_seed(0)
    assert auction_assignment(torch.randn(2, 3, 5, 5, generator=g)).shape == (2, 3, 5)
    assert auction_assignment(torch.zeros(4, 1, 1)).tolist() == [[0]] * 4
    assert auction_assignment(torch.zeros(0, 0)).shape == (0,)
    flat = auction_assignment(torch.full((6, 6), 2.5))
    assert sorted(flat.tolist()) == list(range(6))


def test_auction_refuses_what_is_not_a_square_matrix():
    with pytest.raises(ValueError, match="square"):
        auction_assignment(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="square"):
        auction_assignment(torch.zeros(5))
    with pytest.raises(ValueError, match="tolerance"):
        auction_assignment(torch.zeros(3, 3), tolerance=0.0)


@pytest.mark.parametrize("blocks", [1, 4])
def test_solve_assignment_sends_large_problems_to_the_auction_where_configured(monkeypatch, blocks):
    """With the auction configured for CPU matrices (as for CUDA ones from its crossover
    size), solve_assignment answers as scipy does, also within GroupNorm blocks, and its
    answer stays on the matrix's device."""
    g = torch.Generator().manual_seed(11)
    similarity = torch.randn(32, 32, generator=g)
    expected = solve_assignment(similarity, blocks)
    monkeypatch.setitem(permutations.AUCTION_FROM, "cpu", 32 // blocks)
    calls = []
    real = permutations.auction_assignment
    monkeypatch.setattr(
        permutations, "auction_assignment", lambda m: calls.append(m.shape) or real(m)
    )
    assert torch.equal(solve_assignment(similarity, blocks), expected)
    assert calls == [(32, 32) if blocks == 1 else (blocks, 8, 8)]


class _HostReads(TorchDispatchMode):
    """Counts what waits for the device: values read to the host, and ops whose output size
    depends on the data (nonzero, boolean-mask indexing); and the auction's rounds (its one
    top-2 per round)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = self.sized = self.rounds = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        aten = torch.ops.aten
        if func in (aten._local_scalar_dense.default, aten.item.default):
            self.reads += 1
        masks = [a for a in (args[1] if len(args) > 1 and isinstance(args[1], list) else [])]
        if func in (aten.nonzero.default, aten.masked_select.default) or any(
            isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in masks
        ):
            self.sized += 1
        if func is aten.topk.default and args[1] == 2:
            self.rounds += 1
        return func(*args, **(kwargs or {}))


def test_auction_rounds_wait_for_the_device_rarely():
    """A round of bids reads nothing off the device and makes no data-sized tensor: the
    count of free rows is read once per round only while many rows bid, then once per
    ``ROUNDS_PER_READ`` rounds (a phase's long tail of a few bidders)."""
    g = torch.Generator().manual_seed(5)
    a, b = (torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=1) for _ in "ab")
    matrix = a @ b.T
    with _HostReads() as seen:
        perm = auction_assignment(matrix)
    assert np.array_equal(perm.numpy(), _scipy(matrix))
    assert seen.sized == 0
    assert seen.rounds > 100  # a matrix whose auction has a tail
    assert seen.reads <= seen.rounds / 4

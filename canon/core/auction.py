"""Linear assignment by Bertsekas' auction, batched and on any device (DESIGN §3 "Alignment").

scipy's shortest-augmenting-path solver is exact and fast on a CPU, but it runs
one matrix at a time on the host: on a GPU every solve means a copy off the
device and a pause of the whole pipeline, and the heads of an attention layer
(``heads``² small problems) are solved one by one. The auction here runs on the
device the matrices are on, many problems in one call, with every round a few
whole-tensor operations and no Python loop over units:

- *Bidding (Jacobi).* Every unassigned row bids at once for its best column
  j1 at the price that makes j1 only ``eps`` better than its second best j2:
  ``p[j1] + (v1 - v2) + eps``, with ``v = benefit[row] - p``. Each column goes
  to its highest bid (the lowest row index among equal bids); the row that held
  it is unassigned. Prices only rise, by at least ``eps`` a bid, so the rounds
  end with every row assigned.
- *eps-scaling.* ``eps`` starts at a quarter of the matrix's range and shrinks
  eightfold per phase down to ``tolerance`` x range / n. A phase keeps the
  assignments that are still within the new ``eps`` of the best their row can
  get at the current prices (eps-complementary slackness) and re-auctions the
  rest, so late phases move few rows.

At the end every row is within ``eps`` of its best column at the final prices,
so the total benefit is within ``n * eps = tolerance * range`` of the optimum
(Bertsekas 1988): with the default tolerance (1e-9, in float64) the result is
an optimal assignment unless another one is within 1e-9 of the matrix's range,
and then it is one of those near-ties. The tests compare it with scipy's exact
solver assignment for assignment.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DEFAULT_TOLERANCE", "auction_assignment"]

#: How far from the optimum's total the result may be, as a fraction of the matrix's range.
DEFAULT_TOLERANCE = 1e-9

#: How much eps shrinks from one phase to the next.
_SHRINK = 8.0


def auction_assignment(benefit: Tensor, tolerance: float = DEFAULT_TOLERANCE) -> Tensor:
    """Per square matrix of ``benefit`` ([..., n, n]): the permutation ``perm`` maximizing
    sum_k benefit[k, perm[k]], to within ``tolerance`` x (max - min) of the optimal total.

    Solved on ``benefit``'s device in float64, all matrices of the batch together.
    Returns int64 permutations of shape [..., n] on that device.
    """
    if benefit.ndim < 2 or benefit.shape[-1] != benefit.shape[-2]:
        raise ValueError(f"auction_assignment needs square matrices, got {tuple(benefit.shape)}")
    if not tolerance > 0:
        raise ValueError(f"`tolerance` must be positive, got {tolerance}")
    n = benefit.shape[-1]
    lead = benefit.shape[:-2]
    dev = benefit.device
    if n <= 1 or benefit.numel() == 0:
        return torch.zeros(*lead, n, dtype=torch.int64, device=dev)
    values = benefit.detach().reshape(-1, n, n).to(torch.float64)
    values = values - values.amin(dim=(1, 2), keepdim=True)
    span = values.amax(dim=(1, 2))
    span = torch.where(span > 0, span, torch.ones_like(span))  # a constant matrix: any order
    final = span * (tolerance / n)
    eps = torch.maximum(span / 4, final)
    state = _Auction(values)
    while True:
        state.bid_until_assigned(eps)
        if bool((eps <= final).all()):
            break
        eps = torch.maximum(eps / _SHRINK, final)
        state.release_loose(eps)
    return state.column.reshape(*lead, n)


class _Auction:
    """Prices and the assignment of a batch of [n, n] problems (flat views for scatters)."""

    def __init__(self, values: Tensor) -> None:
        batch, n, _ = values.shape
        dev = values.device
        self.values, self.n = values, n
        self.rows = values.reshape(batch * n, n)  # one row per (problem, row)
        self.problem = torch.arange(batch, device=dev).repeat_interleave(n)
        self.prices = torch.zeros(batch, n, dtype=torch.float64, device=dev)
        self.owner = torch.full((batch, n), -1, dtype=torch.int64, device=dev)  # col -> row
        self.column = torch.full((batch, n), -1, dtype=torch.int64, device=dev)  # row -> col

    def bid_until_assigned(self, eps: Tensor) -> None:
        """Rounds of simultaneous bids until every row holds a column."""
        n = self.n
        flat_prices, flat_owner = self.prices.view(-1), self.owner.view(-1)
        flat_column = self.column.view(-1)
        slots = flat_prices.numel()
        while True:
            free = (flat_column < 0).nonzero().squeeze(1)  # flat (problem, row) ids
            if free.numel() == 0:
                return
            problem = self.problem[free]
            offer = self.rows[free] - self.prices[problem]
            top = offer.topk(2, dim=1)
            best, second = top.values[:, 0], top.values[:, 1]
            target = problem * n + top.indices[:, 0]  # flat (problem, column) ids
            bid = flat_prices[target] + (best - second) + eps[problem]
            high = torch.full((slots,), -torch.inf, dtype=torch.float64, device=bid.device)
            high.scatter_reduce_(0, target, bid, "amax")
            # among the highest bids for a column, the lowest row wins (deterministic)
            contender = torch.where(bid == high[target], free, slots)
            winner = torch.full((slots,), slots, dtype=torch.int64, device=bid.device)
            winner.scatter_reduce_(0, target, contender, "amin")
            won = target[free == winner[target]]  # each column with a winner, once
            rows = winner[won]
            held = flat_owner[won]
            before = held >= 0
            flat_column[(won // n * n + held)[before]] = -1
            flat_owner[won] = rows % n
            flat_column[rows] = won % n
            flat_prices[won] = high[won]

    def release_loose(self, eps: Tensor) -> None:
        """Unassign every row whose column is more than ``eps`` worse than its best at the
        current prices (the others keep eps-complementary slackness at the new eps)."""
        offer = self.values - self.prices[:, None, :]
        best = offer.amax(dim=2)
        held = offer.gather(2, self.column[:, :, None])[:, :, 0]
        loose = held < best - eps[:, None]
        if not bool(loose.any()):
            return
        problems, rows = loose.nonzero(as_tuple=True)
        self.owner[problems, self.column[problems, rows]] = -1
        self.column[problems, rows] = -1

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
  rest, so late phases move few rows. The phases' count depends on n alone.
- *Waiting for the device.* A round picks its bidders with a top-k of the free
  rows' mask, among as many rows as were free at the last count, and writes what
  the rows that did not win would write to one spare slot: no round reads
  anything off the device or makes a tensor whose size depends on the data. The
  count of free rows is read after every round while many rows bid, and once per
  ``ROUNDS_PER_READ`` rounds in a phase's long tail, where one or two rows bid
  at a time for thousands of rounds.

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

__all__ = ["DEFAULT_TOLERANCE", "ROUNDS_PER_READ", "auction_assignment"]

#: How far from the optimum's total the result may be, as a fraction of the matrix's range.
DEFAULT_TOLERANCE = 1e-9

#: How much eps shrinks from one phase to the next.
_SHRINK = 8.0

#: Rounds of bids between two reads of the count of free rows (each read waits for the
#: device); rounds after the last row is assigned change nothing.
ROUNDS_PER_READ = 16

#: From how few free rows on the rounds run ``ROUNDS_PER_READ`` at a time.
_FEW = 64


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
    state = _Auction(values)
    # eps falls from span / 4 to span * tolerance / n for every matrix alike: the number
    # of phases is known on the host
    for k in range(_phases(n, tolerance)):
        eps = span * max(0.25 / _SHRINK**k, tolerance / n)  # as a tensor: one per matrix
        if k:
            state.release_loose(eps)
        state.bid_until_assigned(eps)
    return state.column[: state.slots].reshape(*lead, n)


def _phases(n: int, tolerance: float = DEFAULT_TOLERANCE) -> int:
    """How many eps-scaling phases an n x n auction runs: eps shrinks ``_SHRINK``-fold from
    a quarter of the range until it is at most ``tolerance`` x range / n."""
    count, final = 1, tolerance / n
    while 0.25 / _SHRINK ** (count - 1) > final:
        count += 1
    return count


class _Auction:
    """Prices and the assignment of a batch of [n, n] problems.

    Prices, owners (column -> row) and columns (row -> column) are flat over the batch,
    with one more entry, the void: the writes of bidders that did not win go there, so
    no round picks the winners out (which would read their number off the device). The
    void's values are never read for a real row or column.
    """

    def __init__(self, values: Tensor) -> None:
        batch, n, _ = values.shape
        dev = values.device
        self.values, self.n, self.batch = values, n, batch
        self.rows = values.reshape(batch * n, n)  # one row per (problem, row)
        self.problem = torch.arange(batch, device=dev).repeat_interleave(n)
        self.index = torch.arange(batch * n, device=dev)
        self.base = self.problem * n
        self.slots = batch * n  # flat (problem, column) or (problem, row) ids; this one: none
        self.prices = torch.zeros(self.slots + 1, dtype=torch.float64, device=dev)
        self.owner = torch.full((self.slots + 1,), -1, dtype=torch.int64, device=dev)
        self.column = torch.full((self.slots + 1,), -1, dtype=torch.int64, device=dev)

    def bid_until_assigned(self, eps: Tensor) -> None:
        """Rounds of simultaneous bids until every row holds a column. The count of rows
        still free is read off the device after every round while many bid, after every
        ``ROUNDS_PER_READ`` once few do (the long tail of a phase)."""
        eps_of_row = eps[self.problem]
        while True:
            free = int((self.column[: self.slots] < 0).sum())
            if free == 0:
                return
            # no round frees more rows than it assigns: ``free`` bidders are enough
            for _ in range(ROUNDS_PER_READ if free <= _FEW else 1):
                self._round(eps_of_row, free)

    def _round(self, eps_of_row: Tensor, width: int) -> None:
        """One round: the free rows bid, among ``width`` rows that hold them all."""
        n, slots = self.n, self.slots
        free = self.column[:slots] < 0
        bidder = free.to(torch.int8).topk(width, sorted=False).indices
        real = free[bidder]  # past the free rows: rows that hold a column and do not bid
        base = self.base[bidder]  # the bidder's problem's first slot
        offer = self.rows[bidder] - self.prices[:slots].view(self.batch, n)[self.problem[bidder]]
        top = offer.topk(2, dim=1)
        best, second = top.values[:, 0], top.values[:, 1]
        target = torch.where(real, base + top.indices[:, 0], slots)
        bid = self.prices[target] + (best - second) + eps_of_row[bidder]
        high = torch.full((slots + 1,), -torch.inf, dtype=torch.float64, device=bid.device)
        high.scatter_reduce_(0, target, bid, "amax")
        # among the highest bids for a column, the lowest row wins (deterministic)
        contender = torch.where(bid == high[target], bidder, slots)
        winner = torch.full((slots + 1,), slots, dtype=torch.int64, device=bid.device)
        winner.scatter_reduce_(0, target, contender, "amin")
        won = real & (winner[target] == bidder)
        column = torch.where(won, target, slots)  # each won column once; losers: the void
        held = self.owner[column]
        self.column[torch.where(won & (held >= 0), base + held, slots)] = -1  # displaced
        self.owner[column] = bidder - base
        self.column[torch.where(won, bidder, slots)] = target - base
        self.prices[column] = high[column]

    def release_loose(self, eps: Tensor) -> None:
        """Unassign every row whose column is more than ``eps`` worse than its best at the
        current prices (the others keep eps-complementary slackness at the new eps)."""
        n, batch = self.n, self.batch
        prices = self.prices[: self.slots].view(batch, n)
        column = self.column[: self.slots].view(batch, n)  # every row holds one
        offer = self.values - prices[:, None, :]
        best = offer.amax(dim=2)
        held = offer.gather(2, column[:, :, None])[:, :, 0]
        loose = held < best - eps[:, None]
        rows = self.index[:n].expand(batch, n)
        self.owner[: self.slots].view(batch, n).scatter_(1, column, torch.where(loose, -1, rows))
        column.masked_fill_(loose, -1)

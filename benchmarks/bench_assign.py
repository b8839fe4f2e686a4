"""Linear assignment on the device (the batched auction) against scipy on the host.

For each size n this times, on the same random dense matrices (cosines of two random
layers' rows, as Alg. 2 solves them), in one run:

- ``scipy``: what canon's ``solve_assignment`` does without the auction: the matrix
  copied to the host, reduced, ``scipy.optimize.linear_sum_assignment``, the answer
  copied back (the floor a device solver has to beat);
- ``auction``: ``canon.core.auction.auction_assignment`` on the device, one matrix a call;
- ``auction batched``: ``--batch`` matrices in one call (attention heads, GroupNorm
  blocks), per matrix;

and prints the speed-up of the auction over scipy, whether both gave the same
assignment on every matrix, and the crossover: the smallest n from which the auction
is faster at every larger size measured. For each size it also times canon's
``solve_assignment`` against scipy on an alike pair's matrix (a layer against a noisy
copy of it in another order: every row takes its own strict best, which
``canon.core.permutations.best_in_rows`` reads off the device without a solver), and
what that look costs on the random matrix, which fails it. That size is what
``canon.core.permutations.AUCTION_FROM`` should hold for the device type. On a CPU the
auction is far slower than scipy and is never chosen; run this with ``--device cuda``.

    python benchmarks/bench_assign.py [--device cuda] [--sizes 64 128 256 512 1024 2048 4096]
        [--batch 16] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from _timing import device_name, median_time, synchronizer
from scipy.optimize import linear_sum_assignment

from canon.core.auction import auction_assignment
from canon.core.permutations import best_in_rows, solve_assignment
from canon.device import resolve_device


def _cosines(n: int, batch: int, device: torch.device, seed: int) -> torch.Tensor:
    """``batch`` matrices of cosines between the rows of two random n x 64 layers."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(batch, n, 64, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(batch, n, 64, generator=g), dim=-1)
    return (a @ b.transpose(1, 2)).to(device)


def _alike(n: int, device: torch.device, seed: int) -> torch.Tensor:
    """Cosines between the rows of a random n x 64 layer and those of a copy of it in
    another order with noise (each row moved by about a third of its length): what two
    networks alike but for their units' order give (one fine-tuned from the other)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(n, 64, generator=g), dim=-1)
    b = a[torch.randperm(n, generator=g)] + 0.05 * torch.randn(n, 64, generator=g)
    return (a @ torch.nn.functional.normalize(b, dim=-1).T).to(device)


def _scipy(similarity: torch.Tensor) -> torch.Tensor:
    cost = similarity.double().cpu().numpy()
    cols = linear_sum_assignment(cost, maximize=True)[1]
    return torch.from_numpy(cols).to(similarity.device)


def bench_size(n: int, batch: int, repeats: int, device: torch.device) -> dict[str, Any]:
    sync = synchronizer(device)
    single = _cosines(n, 1, device, seed=n)[0]
    many = _cosines(n, batch, device, seed=n + 1)
    scipy_s = median_time(lambda: _scipy(single), repeats, sync)
    auction_s = median_time(lambda: auction_assignment(single), repeats, sync)
    batched_s = median_time(lambda: auction_assignment(many), repeats, sync) / batch
    same = bool(torch.equal(auction_assignment(single), _scipy(single)))
    batch_answers = auction_assignment(many)
    same_batch = all(torch.equal(batch_answers[k], _scipy(m)) for k, m in enumerate(many))
    # canon's solve on alike networks' matrices, where every row takes its own best (no
    # solver runs), and what looking for that costs on a matrix that fails it
    alike = _alike(n, device, seed=n + 2)
    alike_scipy_s = median_time(lambda: _scipy(alike), repeats, sync)
    alike_canon_s = median_time(lambda: solve_assignment(alike), repeats, sync)
    look_s = median_time(lambda: best_in_rows([single]), repeats, sync)
    return {
        "n": n,
        "scipy_s": scipy_s,
        "auction_s": auction_s,
        "auction_batched_s_per_matrix": batched_s,
        "speedup": scipy_s / auction_s,
        "speedup_batched": scipy_s / batched_s,
        "same_assignments": same and same_batch,
        "alike_scipy_s": alike_scipy_s,
        "alike_canon_s": alike_canon_s,
        "alike_speedup": alike_scipy_s / alike_canon_s,
        "alike_same": bool(torch.equal(solve_assignment(alike), _scipy(alike))),
        "alike_taken_whole": best_in_rows([alike]) is not None,
        "best_in_rows_failing_s": look_s,
        "best_in_rows_failing_share": look_s / scipy_s,
    }


def crossover(rows: list[dict[str, Any]], key: str = "speedup") -> int | None:
    """The smallest n from which the auction is faster at every larger n measured."""
    found = None
    for row in sorted(rows, key=lambda r: r["n"], reverse=True):
        if row[key] <= 1.0:
            break
        found = row["n"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096]
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for n in args.sizes:  # each row also to stderr as it comes: a run cut short keeps them
        rows.append(bench_size(n, args.batch, args.repeats, device))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    name = device_name(device)
    result = {
        "benchmark": "assign",
        "device": str(device),
        "device_name": name,
        "batch": args.batch,
        "rows": rows,
        "crossover": crossover(rows),
        "crossover_batched": crossover(rows, "speedup_batched"),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"auction on {name} vs scipy on the host (batched: {args.batch} matrices a call)")
    print(f"{'n':>6} {'scipy':>9} {'auction':>9} {'speed-up':>9} {'batched':>9} {'same':>5}")
    for r in rows:
        print(
            f"{r['n']:>6} {r['scipy_s']:>8.4f}s {r['auction_s']:>8.4f}s {r['speedup']:>9.2f}"
            f" {r['speedup_batched']:>9.2f} {r['same_assignments']!s:>5}"
        )
    print(f"crossover: {result['crossover']} (batched: {result['crossover_batched']})")
    print("alike networks' matrices: canon's solve_assignment (best_in_rows) against scipy")
    print(f"{'n':>6} {'scipy':>9} {'canon':>9} {'speed-up':>9} {'same':>5} {'failing':>9}")
    for r in rows:
        print(
            f"{r['n']:>6} {r['alike_scipy_s']:>8.4f}s {r['alike_canon_s']:>8.4f}s"
            f" {r['alike_speedup']:>9.1f} {r['alike_same']!s:>5}"
            f" {r['best_in_rows_failing_share']:>8.1%}"
        )
    print("(failing: the look for own bests on a random matrix, as a share of scipy's solve)")


if __name__ == "__main__":
    main()

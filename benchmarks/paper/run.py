"""Reproduce the paper's findings at small scale (a thin wrapper of ``canon repro``).

Trains rsgd, sgd and adv solutions (an MLP and the LeNet-like net on digits; binary
committee machines on the hidden manifold model at three sizes N/D), measures
everything of the paper's sections 4 and 5, and writes ``reproduction.md`` with its
figures and the table of the paper's claims, each with the numbers measured and
whether it holds.

    python benchmarks/paper/run.py [--quick] [--out DIR] [--seed S]
"""

from __future__ import annotations

import argparse
import sys

from canon.repro import run_reproduction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small plan (what CI runs)")
    parser.add_argument("--out", default="repro", help="folder for the report (default: repro)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    def report(stage: str, done: int, total: int) -> None:
        print(f"\r[{done}/{total}] {stage:<40}", end="", file=sys.stderr, flush=True)

    result = run_reproduction(args.out, quick=args.quick, seed=args.seed, progress=report)
    print(file=sys.stderr)
    held = sum(c.holds for c in result.claims)
    print(
        f"{result.report}: {held} of {len(result.claims)} checks hold "
        f"({result.wall_seconds / 60:.1f} min)"
    )
    for claim in result.claims:
        print(f"  {'yes' if claim.holds else 'NO '}  ({claim.id}) {claim.claim}: {claim.measured}")


if __name__ == "__main__":
    main()

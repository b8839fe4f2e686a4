"""Flatness and generalization of sgd, rsgd and adv solutions (the paper's Fig. 1 trend).

Trains an MLP 64-256-256-10 on scikit-learn's digits with each algorithm and
several seeds with the paper's protocol (every one of 300 epochs, cosine
annealing; ``--stop-at-zero`` stops at the first zero-train-error epoch
instead, canon.train's faster default), then measures the local energy at a fixed sigma and the test
error. Prints a table of every run, the means per algorithm, and whether the
expected orders hold (rsgd < sgd < adv for both local energy and test error).
Nothing is tuned to make an order hold.

    python benchmarks/flatness.py [--seeds 0 1 2] [--sigma 0.3] [--stop-at-zero] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from canon.data import load_dataset
from canon.engine import local_energy
from canon.engine.train import train

NET = ("mlp", {"in_features": 64, "hidden": [256, 256], "classes": 10})
ALGOS = ("rsgd", "sgd", "adv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument(
        "--stop-at-zero",
        action="store_true",
        help="stop at the first epoch with zero train error (not the paper's protocol)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    digits = load_dataset("digits")
    runs: list[dict[str, Any]] = []
    for algo in ALGOS:
        for seed in args.seeds:
            start = time.perf_counter()
            target = 0.0 if args.stop_at_zero else None
            lr = {"lr": 0.02} if algo == "adv" else {}  # appendix A.1's vanilla SGD
            result = train(
                NET, digits, algo, seed=seed, epochs=args.epochs, target_error=target, **lr
            )
            seconds = time.perf_counter() - start
            energy = local_energy(
                result.state, NET, digits, [args.sigma], args.draws, seed=seed, device="cpu"
            )
            runs.append(
                {
                    "algo": algo,
                    "seed": seed,
                    "epochs": result.epochs,
                    "train_error": result.train_error,
                    "test_error": result.test_error,
                    "local_energy": energy.mean[0],
                    "seconds": seconds,
                }
            )
    means = {
        algo: {
            key: statistics.mean(r[key] for r in runs if r["algo"] == algo)
            for key in ("train_error", "test_error", "local_energy", "seconds")
        }
        for algo in ALGOS
    }
    holds = {
        key: means["rsgd"][key] < means["sgd"][key] < means["adv"][key]
        for key in ("local_energy", "test_error")
    }
    report = {
        "sigma": args.sigma,
        "draws": args.draws,
        "stop_at_zero": args.stop_at_zero,
        "runs": runs,
        "means": means,
        "holds": holds,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    stop = "stopping at zero train error" if args.stop_at_zero else "every epoch (the paper's)"
    print(
        f"MLP 64-256-256-10 on digits ({args.epochs} epochs max, {stop}); "
        f"local energy at sigma = {args.sigma} ({args.draws} draws)"
    )
    print(f"{'algo':<5} {'seed':>4} {'epochs':>6} {'train':>7} {'test':>7} {'dE':>9} {'time':>7}")
    for r in runs:
        print(
            f"{r['algo']:<5} {r['seed']:>4} {r['epochs']:>6} {r['train_error']:>7.2%} "
            f"{r['test_error']:>7.2%} {r['local_energy']:>9.2e} {r['seconds']:>6.1f}s"
        )
    print("means:")
    for algo, m in means.items():
        print(
            f"  {algo:<5} train {m['train_error']:.2%}  test {m['test_error']:.2%}  "
            f"dE {m['local_energy']:.2e}  time {m['seconds']:.1f}s"
        )
    for key, ok in holds.items():
        print(f"rsgd < sgd < adv for {key}: {'holds' if ok else 'does NOT hold'}")


if __name__ == "__main__":
    main()

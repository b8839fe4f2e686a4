"""A barrier table against its floor: N networks, N(N-1)/2 geodesic barrier curves.

N MLPs 784-512-512-10 (random weights) enter a fresh zoo on 10,000 synthetic inputs (an
``npz`` dataset written here, the train split whole); ``Zoo.barrier_table(path=
"geodesic", points=25)`` computes every pair (alignment, distances-free curve, 25 points
on all inputs). The floor, measured in the same run: 25 networks pre-built as modules
and run on the same inputs by a plain torch loop at the same batch size, once per pair.
Prints the time per pair, table / (pairs x floor) (the issue's goal on CPU: <= 1.1),
the cached rerun's time and the peak resident memory. Asserts nothing.

    python benchmarks/bench_table.py [--n 8] [--width 512] [--points 25] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _timing import median_time, synchronizer  # benchmarks/ is on sys.path when run

from canon.architectures import build_model
from canon.device import resolve_device
from canon.zoo import Zoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="networks (the issue: 30)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = {"in_features": 784, "hidden": [args.width, args.width], "classes": 10}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.inputs, 784, generator=gen)
    y = torch.randint(0, 10, (args.inputs,), generator=gen)
    result: dict[str, Any] = {"n": args.n, "config": config, "points": args.points}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "inputs.npz"
        np.savez(data, x=x.numpy(), y=y.numpy(), x_test=x[:10].numpy(), y_test=y[:10].numpy())
        dataset = f"npz:{data}"
        with Zoo.open(Path(tmp) / "zoo") as zoo:
            for i in range(args.n):
                torch.manual_seed(i)
                state = build_model("mlp", config).state_dict()
                zoo.add(
                    state, name=f"m{i}", architecture="mlp", config=config, dataset=dataset,
                    evaluate=False,
                )  # fmt: skip
            start = time.perf_counter()
            table = zoo.barrier_table(path="geodesic", points=args.points, device=device)
            result["table_s"] = time.perf_counter() - start
            start = time.perf_counter()
            zoo.barrier_table(path="geodesic", points=args.points, device=device)
            result["cached_s"] = time.perf_counter() - start
            result["computed"] = table.computed
    pairs = args.n * (args.n - 1) // 2
    result["pairs"] = pairs
    result["floor_s"] = _floor(config, args.points, x, y, device)
    result["per_pair_s"] = result["table_s"] / pairs
    result["ratio"] = result["table_s"] / (pairs * result["floor_s"])
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["device"] = str(device)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.n} MLPs 784-{args.width}-{args.width}-10, {pairs} pairs, {args.points} points, "
        f"{args.inputs} inputs on {device}"
    )
    print(
        f"table {result['table_s']:.1f} s ({result['per_pair_s']:.3f} s per pair); floor "
        f"{result['floor_s']:.3f} s per pair; ratio {result['ratio']:.2f} (goal on CPU <= 1.1)"
    )
    print(
        f"cached rerun {result['cached_s']:.3f} s; peak resident memory "
        f"{result['peak_rss_mb']:.0f} MB"
    )


def _floor(
    config: dict[str, Any], points: int, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> float:
    """One pair's floor: ``points`` networks pre-built as modules, each run on every input
    by a plain loop at the evaluator's batch size (10,000), in inference mode."""
    networks = [build_model("mlp", config).to(device).eval() for _ in range(points)]
    xs, ys = x.to(device), y.to(device)
    batch = 10_000

    def run() -> None:
        with torch.inference_mode():
            for net in networks:
                wrong = torch.zeros((), device=device)
                for start in range(0, xs.shape[0], batch):
                    logits = net(xs[start : start + batch])
                    wrong += (logits.argmax(1) != ys[start : start + batch]).sum()
                float(wrong)

    return median_time(run, 3, synchronizer(device))


if __name__ == "__main__":
    main()

"""Stacked evaluation (a path's points under one ``vmap``) against point by point, by size.

For MLPs 784-H-H-10 (H from ``--widths``), the 25-point geodesic between two random
networks is evaluated on ``--inputs`` synthetic inputs by canon's ``Evaluator``, in one
run, twice:

- point by point (``evaluator.stackable = False``);
- every point stacked in one call per data batch
  (``canon.engine.evaluate.STACK_WORK`` raised for the device while it runs).

Prints for each width the work that ``STACK_WORK`` bounds (the weights after the first
layer times a batch's rows), both times and the speed-up of stacking, whether both gave
the same errors, and what ``STACK_WORK`` should hold for the device type: the points
times the largest work per point at which stacking still wins at every smaller width
measured (the work one stacked call may hold). The CPU value in canon was set this way;
the CUDA one waits for ``--device cuda``.

    python benchmarks/bench_stacking.py [--device cuda] [--widths 64 128 ... 4096]
        [--inputs 10000] [--points 25] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from _timing import median_time, path_arguments, report_header, synchronizer

from canon.architectures import build_model
from canon.core import apply_alignment, match, normalize, spec_from_module
from canon.core.paths import geodesic_path, positions
from canon.device import resolve_device
from canon.engine import Evaluator
from canon.engine import evaluate as evaluate_module

WIDTHS = [64, 128, 256, 512, 1024, 2048, 4096]


def bench_width(
    width: int, inputs: int, points: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    config = {"in_features": 784, "hidden": [width, width], "classes": 10}
    torch.manual_seed(width)
    model = build_model("mlp", config)
    spec = spec_from_module(model)
    other = build_model("mlp", config)
    a, b = (
        normalize({k: v.to(device) for k, v in m.state_dict().items()}, spec)
        for m in (model, other)
    )
    path = geodesic_path(a, apply_alignment(b, match(b, a, spec), spec), spec, positions(points))
    gen = torch.Generator().manual_seed(width + 1)
    x = torch.randn(inputs, 784, generator=gen)
    y = torch.randint(0, 10, (inputs,), generator=gen)
    evaluator = Evaluator(model, x, y, device)
    sync = synchronizer(device)
    tail = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.fc1.parameters()
    )
    work = tail * min(evaluator.rows(), inputs)

    evaluator.stackable = False
    point_errors = evaluator.evaluate(path).errors
    point_s = median_time(lambda: evaluator.evaluate(path), repeats, sync)

    saved = dict(evaluate_module.STACK_WORK)
    evaluate_module.STACK_WORK[device.type] = 1 << 62
    try:
        evaluator.stackable = True
        stacked_errors = evaluator.evaluate(path).errors
        stacked_s = median_time(lambda: evaluator.evaluate(path), repeats, sync)
        stacked = evaluator.stackable  # False when vmap could not run the network
    finally:
        evaluate_module.STACK_WORK.clear()
        evaluate_module.STACK_WORK.update(saved)
    return {
        "width": width,
        "work_per_point": work,
        "point_by_point_s": point_s,
        "stacked_s": stacked_s,
        "speedup": point_s / stacked_s,
        "stacked_ran": stacked,
        "same_errors": bool(torch.equal(point_errors, stacked_errors)),
    }


def suggested_work(rows: list[dict[str, Any]], points: int) -> int | None:
    """``points`` times the largest work per point up to which stacking wins at every
    width measured (None when it loses already at the smallest)."""
    found = None
    for row in sorted(rows, key=lambda r: r["work_per_point"]):
        if row["speedup"] <= 1.0 or not row["stacked_ran"]:
            break
        found = row["work_per_point"] * points
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    path_arguments(parser, inputs=10_000, points=25)
    parser.add_argument("--widths", type=int, nargs="+", default=WIDTHS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = [bench_width(w, args.inputs, args.points, args.repeats, device) for w in args.widths]
    work = suggested_work(rows, args.points)
    report = {
        **report_header("stacking", device, args.inputs, args.points),
        "current_stack_work": evaluate_module.STACK_WORK.get(device.type),
        "suggested_stack_work": work,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"device {report['device_name']}, {args.inputs} inputs, {args.points} points")
    for r in rows:
        print(
            f"H={r['width']:5d}  work/point {r['work_per_point']:.2e}  "
            f"point by point {r['point_by_point_s']:.4f} s  stacked {r['stacked_s']:.4f} s  "
            f"speed-up {r['speedup']:.2f}  same errors {r['same_errors']}"
        )
    print(f"STACK_WORK[{device.type!r}] now {report['current_stack_work']}, suggested {work}")


if __name__ == "__main__":
    main()

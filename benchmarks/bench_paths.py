"""Evaluation along a path against its floor and against per-point research-code style.

For an MLP 784-512-512-10 and a small conv net (LeNet-like: conv 8 and 16 5x5
filters, 2x2 max-pool, fc 128, on 1x16x16 inputs) on
10,000 synthetic inputs with 25 path points, in one run:

- canon: ``canon.engine.path_curve`` (geodesic path, distances and alignment included);
- floor: the same 25 networks, pre-built as modules, evaluated by a plain torch loop
  over the same data at the same batch size (inference mode);
- baseline: research-code style: ``load_state_dict`` into one model per point, a
  ``DataLoader`` over the data.

Targets on CPU: canon / floor <= 1.15 and baseline / canon >= 2.

    python benchmarks/bench_paths.py [--device cpu|cuda] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from _timing import median_time, synchronizer  # benchmarks/ is on sys.path when run
from torch.utils.data import DataLoader, TensorDataset

from canon.architectures import build_model
from canon.core import apply_alignment, match, normalize, spec_from_module
from canon.core.paths import geodesic_path, positions
from canon.device import resolve_device
from canon.engine import path_curve

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp 784-512-512-10": ("mlp", {"in_features": 784, "hidden": [512, 512], "classes": 10}),
    "conv 8-16-128 1x16x16": (
        "lenet",
        {"input_size": 16, "padding": 2, "channels": [8, 16], "hidden": 128},
    ),
}


def bench_case(
    label: str, points: int, samples: int, batch: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    name, config = CASES[label]
    torch.manual_seed(0)
    model = build_model(name, config)
    spec = spec_from_module(model)
    a = {k: v.to(device) for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    b = {k: v.to(device) for k, v in build_model(name, config).state_dict().items()}
    gen = torch.Generator().manual_seed(2)
    x = torch.randn((samples, *model.input_shape), generator=gen).to(device)
    y = torch.randint(0, 10, (samples,), generator=gen).to(device)

    sync = synchronizer(device)

    def canon_run() -> None:
        path_curve(a, b, model, (x, y), "geodesic", points, device, batch_size=batch)

    # the same 25 networks, materialized once outside the timing
    norm_a, norm_b = normalize(a, spec), normalize(b, spec)
    aligned_b = apply_alignment(norm_b, match(norm_b, norm_a, spec), spec)
    path = geodesic_path(norm_a, aligned_b, spec, positions(points))
    states = [path.state(k) for k in range(points)]
    networks = []
    for state in states:
        net = build_model(name, config).to(device).eval()
        net.load_state_dict(state)
        networks.append(net)

    def floor_run() -> None:
        with torch.inference_mode():
            for net in networks:
                wrong = torch.zeros((), device=device)
                for start in range(0, samples, batch):
                    logits = net(x[start : start + batch])
                    wrong += (logits.argmax(1) != y[start : start + batch]).sum()
                float(wrong)

    def baseline_run() -> None:
        net = build_model(name, config).to(device).eval()
        loader = DataLoader(TensorDataset(x, y), batch_size=batch)
        with torch.no_grad():
            for state in states:
                net.load_state_dict(state)
                wrong = 0
                for xb, yb in loader:
                    wrong += int((net(xb).argmax(1) != yb).sum())

    canon_s = median_time(canon_run, repeats, sync)
    floor_s = median_time(floor_run, repeats, sync)
    baseline_s = median_time(baseline_run, repeats, sync)
    return {
        "case": label,
        "points": points,
        "samples": samples,
        "batch_size": batch,
        "canon_s": canon_s,
        "floor_s": floor_s,
        "baseline_s": baseline_s,
        "canon_over_floor": canon_s / floor_s,
        "baseline_over_canon": baseline_s / canon_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = [
        bench_case(label, args.points, args.samples, args.batch_size, args.repeats, device)
        for label in CASES
    ]
    result = {
        "benchmark": "paths",
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "targets": "canon/floor <= 1.15, baseline/canon >= 2 (CPU)",
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"geodesic path, {args.points} points, {args.samples} inputs, batch "
        f"{args.batch_size}, device {device}"
    )
    print(
        f"{'case':<22} {'canon':>8} {'floor':>8} {'baseline':>9} "
        f"{'canon/floor':>12} {'baseline/canon':>15}"
    )
    for r in rows:
        print(
            f"{r['case']:<22} {r['canon_s']:>7.3f}s {r['floor_s']:>7.3f}s "
            f"{r['baseline_s']:>8.3f}s {r['canon_over_floor']:>12.2f} "
            f"{r['baseline_over_canon']:>15.2f}"
        )
    print(f"targets: {result['targets']}")


if __name__ == "__main__":
    main()

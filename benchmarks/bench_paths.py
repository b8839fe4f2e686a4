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

``--vgg`` adds torchvision's vgg11_bn (129M parameters, 10 classes, 3x32x32 inputs; by
default 1,000 inputs, 25 points, one run without warm-up): canon's time against two floors made
one point at a time (25 networks of 515 MB do not fit side by side), the bare forward
passes and those plus the BatchNorm statistics recomputed at the 23 interior points as
the path recomputes them; and canon's peak resident memory, in all and above what the
process held before the call (the two endpoints, the model, the data: 1.5 GB of networks).

    python benchmarks/bench_paths.py [--device cpu|cuda] [--repeats 3] [--json]
    python benchmarks/bench_paths.py --vgg [--samples 1000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from _floors import count_wrong, recompute_batchnorm  # benchmarks/ is on sys.path when run
from _libraries import torchvision_or_none
from _memory import PeakMemory, resident_mb
from _timing import median_time, synchronizer
from torch.utils.data import DataLoader, TensorDataset

from canon.architectures import build_model
from canon.core import apply_alignment, match, normalize, spec_from_module
from canon.core.paths import geodesic_path, positions
from canon.device import resolve_device
from canon.engine import Evaluator, PathOptions, path_curve

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
        for net in networks:
            count_wrong(net, x, y, batch)

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


def bench_vgg(
    points: int, samples: int, repeats: int, device: torch.device
) -> dict[str, Any] | None:
    """torchvision's vgg11_bn along the geodesic: time against the floors, peak memory."""
    torchvision = torchvision_or_none()
    if torchvision is None:
        return None
    torch.manual_seed(0)
    model = torchvision.models.vgg11_bn(num_classes=10).to(device).eval()
    spec = spec_from_module(model, input_shape=(3, 32, 32))
    a = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    other = torchvision.models.vgg11_bn(num_classes=10)
    b = {k: v.to(device) for k, v in other.state_dict().items()}
    del other
    gen = torch.Generator().manual_seed(2)
    x = torch.randn((samples, 3, 32, 32), generator=gen).to(device)
    y = torch.randint(0, 10, (samples,), generator=gen).to(device)
    options = PathOptions(points=points)
    sync = synchronizer(device)
    count_wrong(model, x[:2], y[:2], 2)  # the kernels' one-time set-up, outside the timing
    held = resident_mb()
    with PeakMemory() as peak:
        canon_s = median_time(
            lambda: path_curve(
                a, b, model, (x, y), "geodesic", device=device, spec=spec, options=options
            ),
            repeats,
            sync,
            warm_up=False,
        )

    # the floors: the path's networks one at a time, each loaded outside the timing
    norm_a, norm_b = normalize(a, spec), normalize(b, spec)
    aligned_b = apply_alignment(norm_b, match(norm_b, norm_a, spec), spec)
    del norm_b
    path = geodesic_path(norm_a, aligned_b, spec, positions(points))
    batch = Evaluator(model, x, y, device).rows()
    net = torchvision.models.vgg11_bn(num_classes=10).to(device).eval()
    floor_s = bn_s = 0.0
    for k in range(points):
        net.load_state_dict(path.state(k))
        floor_s += median_time(lambda: count_wrong(net, x, y, batch), repeats, sync, False)
        if 0 < k < points - 1:
            bn_s += median_time(
                lambda: recompute_batchnorm(net, x, options.bn_batches, options.bn_batch_size),
                repeats,
                sync,
                False,
            )
    return {
        "case": "vgg11_bn 3x32x32",
        "points": points,
        "samples": samples,
        "batch_size": batch,
        "canon_s": canon_s,
        "floor_s": floor_s,
        "bn_floor_s": bn_s,
        "canon_over_floor": canon_s / floor_s,
        "canon_over_floor_with_bn": canon_s / (floor_s + bn_s),
        "peak_rss_mb": peak.mb,
        "peak_over_held_mb": peak.mb - held,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--samples", type=int, help="inputs (default 10,000; --vgg: 1,000)")
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, help="timed runs (default 3; --vgg: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--vgg", action="store_true", help="torchvision's vgg11_bn alone (1,000 inputs by default)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.vgg:
        _report_vgg(args, device)
        return
    args.samples = args.samples or 10_000
    args.repeats = args.repeats or 3
    rows = [
        bench_case(label, args.points, args.samples, args.batch_size, args.repeats, device)
        for label in CASES
    ]
    targets = "canon/floor <= 1.15, baseline/canon >= 2 (CPU)"
    if _printed_json(args, device, targets, rows):
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
    print(f"targets: {targets}")


def _printed_json(
    args: argparse.Namespace, device: torch.device, targets: str, rows: list[dict[str, Any]]
) -> bool:
    """With ``--json``, print the run as one JSON object and say so."""
    if args.json:
        result = {
            "benchmark": "paths",
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "targets": targets,
            "rows": rows,
        }
        print(json.dumps(result, indent=2))
    return bool(args.json)


def _report_vgg(args: argparse.Namespace, device: torch.device) -> None:
    row = bench_vgg(args.points, args.samples or 1_000, args.repeats or 1, device)
    if row is None:
        print("vgg11_bn: skipped (torchvision is not installed)")
        return
    targets = "peak memory under 2 GB, canon/floor <= 1.2 (CPU)"
    if _printed_json(args, device, targets, [row]):
        return
    print(
        f"vgg11_bn geodesic path, {row['points']} points, {row['samples']} inputs (batch "
        f"{row['batch_size']}), BN statistics recomputed at the interior points, {device}"
    )
    print(
        f"canon {row['canon_s']:.1f}s, floor {row['floor_s']:.1f}s bare + "
        f"{row['bn_floor_s']:.1f}s BN recompute: ratio {row['canon_over_floor']:.2f} bare, "
        f"{row['canon_over_floor_with_bn']:.2f} with BN"
    )
    print(
        f"peak memory {row['peak_rss_mb']:.0f} MB in all, {row['peak_over_held_mb']:.0f} MB "
        "above the endpoints, model and data held before the call"
    )
    print(f"targets: {targets}")


if __name__ == "__main__":
    main()

"""Convnets' image batches channels-last against NCHW, in canon's evaluator, by network.

For each network (the built-in CIFAR ResNet-20; torchvision's vgg11_bn, resnet18 and
mobilenet_v2 when torchvision is installed, 10 classes), a ``--points``-point linear path
between two random networks is evaluated on ``--inputs`` synthetic 3x32x32 images by
canon's ``Evaluator``, once with each layout (``canon.engine.layout.CHANNELS_LAST`` set
for the device type while the evaluator is made), alternating, median of ``--repeats``.

Prints each network's two times, the speed-up of channels-last, the largest difference
of the errors along the path (the layouts sum in different orders: a few ulps, which can
flip a prediction at a near tie), and what ``CHANNELS_LAST`` should hold for the device
type: channels-last where its speed-ups' geometric mean is above 1. The CPU value in
canon was set from such measurements; the CUDA one waits for ``--device cuda``.

    python benchmarks/bench_layout.py [--device cuda] [--inputs 1000] [--points 5]
        [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any

import torch
from _libraries import torchvision_or_none  # benchmarks/ is on sys.path when run
from _timing import median_time, path_arguments, report_header, synchronizer
from torch import nn

from canon.architectures import build_model
from canon.core.paths import linear_path, positions
from canon.device import resolve_device
from canon.engine import Evaluator
from canon.engine import layout as layout_module


def networks() -> dict[str, Callable[[], nn.Module]]:
    """The convnets measured, by name: factories of fresh random networks."""
    found: dict[str, Callable[[], nn.Module]] = {
        "resnet20": lambda: build_model("resnet", {"depth": 20, "width": 1, "classes": 10})
    }
    torchvision = torchvision_or_none()
    if torchvision is not None:
        for name in ("vgg11_bn", "resnet18", "mobilenet_v2"):
            found[name] = lambda name=name: getattr(torchvision.models, name)(num_classes=10)
    return found


def bench_network(
    make: Callable[[], nn.Module], inputs: int, points: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Both layouts' times for one network's path, and their errors' largest difference."""
    torch.manual_seed(0)
    model = make().eval()
    a = {k: v.to(device) for k, v in model.state_dict().items()}
    b = {k: v.to(device) for k, v in make().state_dict().items()}
    path = linear_path(a, b, positions(points))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(inputs, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (inputs,), generator=gen)
    sync = synchronizer(device)
    saved = dict(layout_module.CHANNELS_LAST)
    evaluators = {}
    try:
        for last in (False, True):
            layout_module.CHANNELS_LAST[device.type] = last
            evaluators[last] = Evaluator(model, x, y, device)
    finally:
        layout_module.CHANNELS_LAST.clear()
        layout_module.CHANNELS_LAST.update(saved)
    errors = {last: ev.evaluate(path).errors for last, ev in evaluators.items()}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):  # alternating, so that drifts in the machine's speed cancel
        for last, ev in evaluators.items():
            times[last].append(median_time(lambda ev=ev: ev.evaluate(path), 1, sync, False))
    nchw, channels_last = sorted(times[False])[repeats // 2], sorted(times[True])[repeats // 2]
    return {
        "rows": min(evaluators[True].rows(), inputs),
        "nchw_s": nchw,
        "channels_last_s": channels_last,
        "speedup": nchw / channels_last,
        "max_error_difference": float((errors[True] - errors[False]).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    path_arguments(parser, inputs=1_000, points=5)
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = {
        name: bench_network(make, args.inputs, args.points, args.repeats, device)
        for name, make in networks().items()
    }
    mean = math.exp(sum(math.log(r["speedup"]) for r in rows.values()) / len(rows))
    report = {
        **report_header("layout", device, args.inputs, args.points),
        "networks": rows,
        "geometric_mean_speedup": mean,
        "current_channels_last": layout_module.CHANNELS_LAST.get(device.type, False),
        "suggested_channels_last": mean > 1.0,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"device {report['device_name']}, {args.inputs} inputs, {args.points} points")
    for net, r in rows.items():
        print(
            f"{net:13s} {r['rows']:5d} rows  NCHW {r['nchw_s']:.3f} s  channels-last "
            f"{r['channels_last_s']:.3f} s  speed-up {r['speedup']:.2f}  errors differ by "
            f"{r['max_error_difference']:.4f}"
        )
    print(
        f"geometric mean speed-up {mean:.2f}; CHANNELS_LAST[{device.type!r}] now "
        f"{report['current_channels_last']}, suggested {report['suggested_channels_last']}"
    )


if __name__ == "__main__":
    main()

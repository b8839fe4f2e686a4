"""Peak memory of adding a network to a family that already has a reference, against
the copies of the weights that the matching must hold.

Two VGG-11s with BatchNorm of torchvision vgg11_bn's shapes (the built-in ``vgg`` with
VGG-11's layers on 224x224 inputs, two 4096-wide hidden layers and 10 classes: 129M
parameters, 515 MB of float32, a first classifier layer of 4096 x 25,088) are saved as
safetensors. The first is added to a fresh zoo and becomes its family's reference; then
the second is added (read, checked, serialized, matched to the reference, stored), its
peak resident memory sampled every 10 ms above what the process held just before.
The floor: three copies of the weights, which the matching holds at once (the new
network, its normalized copy and the normalized reference). Prints the peak above held,
its ratio to the floor and the add's time; asserts nothing.

    python benchmarks/bench_add_matching.py [--width 1.0] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch
from _memory import PeakMemory, resident_mb  # benchmarks/ is on sys.path when run

from canon.architectures import build_model
from canon.checkpoint import save_state
from canon.zoo import Zoo

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--width", type=float, default=1.0, help="the convolutions' width multiplier"
    )
    parser.add_argument(
        "--hidden", type=int, default=4096, help="the two hidden layers' width (default 4096)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    config = {
        "layers": VGG11,
        "width": args.width,
        "input_size": 224,
        "hidden": [args.hidden, args.hidden],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = 0
        for seed in (0, 1):
            torch.manual_seed(seed)
            state = build_model("vgg", config).state_dict()
            weights = sum(t.numel() * t.element_size() for t in state.values())
            save_state(state, root / f"v{seed}.safetensors")
            del state
        zoo = Zoo.open(root / "zoo")
        zoo.add(root / "v0.safetensors", name="v0", architecture="vgg", config=config,
                evaluate=False)  # fmt: skip
        gc.collect()
        held = resident_mb()
        start = time.perf_counter()
        with PeakMemory() as peak:
            zoo.add(root / "v1.safetensors", name="v1", architecture="vgg", config=config,
                    evaluate=False)  # fmt: skip
        seconds = time.perf_counter() - start
    weights_mib = weights / 2**20
    above = peak.mb - held
    report = {
        "config": config,
        "weights_mib": weights_mib,
        "held_mib": held,
        "peak_mib": peak.mb,
        "peak_over_held_mib": above,
        "floor_mib": 3 * weights_mib,
        "ratio": above / (3 * weights_mib),
        "seconds": seconds,
        "threads": torch.get_num_threads(),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"second add of a VGG-11 ({weights_mib:,.0f} MiB of weights), {seconds:.1f} s")
    print(f"peak {above:,.0f} MiB above the {held:,.0f} MiB held before the add")
    floor = report["floor_mib"]
    print(f"floor (3 copies of the weights) {floor:,.0f} MiB: ratio {report['ratio']:.2f}")


if __name__ == "__main__":
    main()

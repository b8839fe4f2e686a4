"""Host reads and device ops per table pair against a plain loop's, counted on any device.

On a GPU each read of a value off the device (``item``, ``float``, ``bool``, a copy to
the host) waits for the device's queue to drain, and each op is a kernel launch of a few
microseconds: a small network's table pair is only as fast as it makes few of both. A
dispatch mode counts them here, on the CPU as well as on a GPU, for the barrier table of
N networks (geodesic, 25 points; the MLPs 784-512-512-10 and CIFAR ResNet-20s of
``bench_table.py``, random weights) and for the floor: one pair's 25 points run by a
plain loop over pre-built modules (and, for the ResNets, their interior points'
BatchNorm statistics recomputed by one). Prints per pair: host reads, ops that are not
views (launches on a GPU), and each as a ratio to the floor's. Asserts nothing.

``--as-gpu`` evaluates the paths as on a GPU (points stacked up to STACK_WORK['cuda'],
distances summed in a GPU's blocks, networks' copies kept as on a GPU, KEEP_BYTES),
so that a CPU counts what a GPU would run. Pairs are prepared in this thread (a dispatch
mode sees its own thread's ops only).

    python benchmarks/bench_syncs.py [--arch mlp|resnet20] [--n 4] [--inputs 512]
        [--points 25] [--device cpu] [--as-gpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _floors import PairFloors  # benchmarks/ is on sys.path when run
from torch.utils._python_dispatch import TorchDispatchMode

import canon.core.geometry as geometry
import canon.engine.evaluate as evaluate_module
import canon.engine.landscape as landscape
from canon.architectures import build_model
from canon.device import KEEP_BYTES, keep_bytes, resolve_device
from canon.zoo import Zoo

NETS: dict[str, tuple[str, dict[str, Any], tuple[int, ...]]] = {
    "mlp": ("mlp", {"in_features": 784, "hidden": [512, 512], "classes": 10}, (784,)),
    "resnet20": ("resnet", {"depth": 20, "width": 1, "classes": 10}, (3, 32, 32)),
}


class Counts(TorchDispatchMode):
    """The ops dispatched while active: host reads (a value read off a tensor but for
    safetensors' own byte reads, a copy from another device to the CPU, or an op whose
    result's size depends on the values, which a GPU must report to the host first) and
    ops that are not views."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        scalar = func in _READS and args[0].dtype != torch.uint8
        sized = func in _SIZED_BY_VALUES or (func is torch.ops.aten.index.Tensor and _masked(args))
        copied = func is torch.ops.aten._to_copy.default and _to_host(args, out)
        self.reads += scalar or sized or copied
        if not func.is_view:
            self.ops[str(func)] += 1
        return out

    def per(self, count: int) -> dict[str, float]:
        """Reads and ops per ``count`` (pairs)."""
        return {"reads": self.reads / count, "ops": sum(self.ops.values()) / count}


# ``item`` reaches the mode itself under inference mode, else as ``_local_scalar_dense``;
# a uint8 read is safetensors looking at a byte of each tensor it loads, on the host
_READS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default)


#: ops whose result's size depends on the values (a boolean mask's picks, ``unique``)
_SIZED_BY_VALUES = (
    torch.ops.aten.nonzero.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.unique_dim.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten.masked_select.default,
)


def _masked(args: tuple[Any, ...]) -> bool:
    """Whether an ``index`` picks by a boolean mask (``x[mask]``)."""
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def _to_host(args: tuple[Any, ...], out: Any) -> bool:
    source = args[0] if args and isinstance(args[0], torch.Tensor) else None
    return bool(
        source is not None
        and isinstance(out, torch.Tensor)
        and source.device.type != "cpu"
        and out.device.type == "cpu"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(NETS), default="mlp")
    parser.add_argument("--n", type=int, default=4, help="networks in the table")
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--as-gpu", action="store_true", help="stack points as on a GPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.as_gpu:
        gpu = torch.device("cuda")
        evaluate_module.STACK_WORK[device.type] = evaluate_module.STACK_WORK["cuda"]
        geometry.BLOCK[device.type] = geometry._block(gpu)
        KEEP_BYTES[device.type] = keep_bytes(gpu)
    landscape.PREPARE_THREADS = 1
    arch, config, shape = NETS[args.arch]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.inputs, *shape, generator=gen)
    y = torch.randint(0, 10, (args.inputs,), generator=gen)
    pairs = args.n * (args.n - 1) // 2
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "inputs.npz"
        np.savez(data, x=x.numpy(), y=y.numpy(), x_test=x[:10].numpy(), y_test=y[:10].numpy())
        with Zoo.open(Path(tmp) / "zoo") as zoo:
            for i in range(args.n):
                torch.manual_seed(i)
                zoo.add(
                    build_model(arch, config).state_dict(), name=f"m{i}", architecture=arch,
                    config=config, dataset=f"npz:{data}", evaluate=False,
                )  # fmt: skip
            # the spec, the evaluator and the data set made once, outside the counts
            zoo.barrier_table(path="geodesic", points=args.points, device=device,
                              entries=zoo.entries()[:2])  # fmt: skip
            with Counts() as table:
                zoo.barrier_table(path="geodesic", points=args.points, device=device)
    floors = PairFloors(arch, config, args.points, x, y, device)  # built outside the counts
    with Counts() as floor:
        floors.forward()
        if floors.has_batchnorm:
            floors.batchnorm()
    mine, base = table.per(pairs - 1), floor.per(1)
    result = {
        "arch": args.arch, "n": args.n, "pairs_counted": pairs - 1, "points": args.points,
        "inputs": args.inputs, "device": str(device), "as_gpu": args.as_gpu,
        "table_per_pair": mine, "floor_per_pair": base,
        "reads_ratio": mine["reads"] / max(base["reads"], 1),
        "ops_ratio": mine["ops"] / max(base["ops"], 1),
        "top_ops": dict(table.ops.most_common(12)),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    stacked = " (stacked as on a GPU)" if args.as_gpu else ""
    print(
        f"{args.arch} table of {args.n} on {device}{stacked}, {args.points} points, "
        f"{args.inputs} inputs; per pair:"
    )
    print(
        f"host reads {mine['reads']:.0f} (floor {base['reads']:.0f}, ratio "
        f"{result['reads_ratio']:.1f}); ops {mine['ops']:.0f} (floor {base['ops']:.0f}, "
        f"ratio {result['ops_ratio']:.2f})"
    )


if __name__ == "__main__":
    main()

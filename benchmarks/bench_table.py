"""A barrier table against its floor: N networks, N(N-1)/2 geodesic barrier curves.

N MLPs 784-512-512-10 (random weights) enter a fresh zoo on 10,000 synthetic inputs (an
``npz`` dataset written here, the train split whole); ``Zoo.barrier_table(path=
"geodesic", points=25)`` computes every pair (alignment, distances-free curve, 25 points
on all inputs). The floor, measured in the same run: 25 networks pre-built as modules
and run on the same inputs by a plain torch loop at the same batch size, once per pair.
Prints the time per pair, table / (pairs x floor) (the issue's goal on CPU: <= 1.1),
the cached rerun's time and the peak resident memory (and what it was before the table:
the table's own memory does not grow with N). Asserts nothing.

``--arch resnet20`` takes N CIFAR ResNet-20s (the built-in ``resnet``, ``--resnet-width``
times 16/32/64 channels) on 3x32x32 inputs instead. Their BatchNorm statistics are
recomputed at every interior point (20 batches of 256 inputs, the default), work that
bare forward passes do not do: the run also reports that recomputation done by a plain
torch loop, and the ratio to the floor with it. The floors' loops lay the images out
as canon does (channels-last on CPU, :mod:`canon.engine.layout`).

A table too long for one sitting (N = 12 ResNet-20s on 10,000 inputs: hours on 2 CPU
cores) runs in parts: ``--keep DIR`` keeps the zoo (and so every pair computed) in
``DIR``, ``--budget-s S`` stops after the pair that ends past S seconds, and the next run
with the same ``--keep`` computes the rest. Each run measures its own floors; the report
sums the runs' times and pairs (``DIR/bench_table.json``). Shared cores' speed can drift
by a factor of two over tens of minutes, so a floor measured once, after hours of table,
may be measured in another state of the machine than the table ran in: ``--floor-every
K`` (in-process tables) pauses the table after every K pairs it computes to measure the floors once
(their time is not the table's), and the run's floors are the mean of those samples.
In-process ResNet tables do so every 5 pairs by default (``--floor-every 0``: once,
after the table); a ResNet pair and its floors each run for minutes on CPU.

``--overlap on|off`` prepares each group of pairs while the group before is evaluated, or
not, whatever canon does on the device (``OVERLAP``: on for a GPU). ``--prepare-threads
K`` prepares at most K pairs of a group at once (``PREPARE_THREADS``, default 8);
``--also-threads K ...`` computes the same table again after it, on fresh copies of the
zoo, with each of those counts, and says whether every number is the same: hosts differ
between machines, so settings are compared in one process. ``--turns on|off`` has the
preparing threads take turns at launching ops or not (``BATON``: on for a GPU), and
``--also-turns on|off`` computes the table again with that setting.

``--executor ray`` computes the table as Ray tasks (a new local cluster, or the one at
``--address``); ``--check-local`` then also computes it in-process and says whether every
number is the same. ``--n 200 --width 16 --inputs 1000`` is the many-pairs case (19,900
pairs of tiny networks).

    python benchmarks/bench_table.py [--n 8] [--arch mlp|resnet20] [--width 512]
        [--resnet-width 1] [--points 25] [--inputs 10000]
        [--executor local|ray] [--address ADDR] [--check-local] [--align pair|reference]
        [--overlap auto|on|off] [--prepare-threads K] [--also-threads K ...]
        [--turns auto|on|off] [--also-turns on|off]
        [--keep DIR] [--budget-s S] [--floor-every K] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _floors import PairFloors  # benchmarks/ is on sys.path when run
from tqdm import tqdm

import canon.engine.landscape as landscape
from canon.architectures import build_model
from canon.device import resolve_device
from canon.zoo import Zoo
from canon.zoo._pair_work import OVERLAP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="networks (the issue: 30)")
    parser.add_argument("--arch", choices=["mlp", "resnet20"], default="mlp")
    parser.add_argument("--width", type=int, default=512, help="the MLPs' hidden width")
    parser.add_argument("--resnet-width", type=int, default=1, help="ResNet width multiplier")
    parser.add_argument("--points", type=int, default=25)
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--executor", choices=["local", "ray"], default="local", help="where pairs run"
    )
    parser.add_argument("--address", help="a Ray cluster (default: a new local one)")
    _auto_on_off(
        parser,
        "--overlap",
        "prepare each group of pairs while the one before is evaluated (auto: as canon does "
        "on the device, OVERLAP)",
    )
    parser.add_argument(
        "--prepare-threads",
        type=int,
        help="pairs of a group prepared at once at most (canon's PREPARE_THREADS)",
    )
    parser.add_argument(
        "--also-threads",
        type=int,
        nargs="*",
        default=[],
        help="then the same table again, from a fresh copy of the zoo, with each of these "
        "counts of pairs prepared at once",
    )
    _auto_on_off(
        parser,
        "--turns",
        "whether the threads preparing pairs take turns at launching ops (auto: as canon "
        "does on the device, BATON)",
    )
    parser.add_argument(
        "--also-turns",
        choices=["on", "off"],
        help="then the same table again, from a fresh copy of the zoo, with turns on or off",
    )
    parser.add_argument(
        "--align", choices=["pair", "reference"], default="pair", help="how pairs are aligned"
    )
    parser.add_argument(
        "--check-local",
        action="store_true",
        help="with --executor ray: also compute the table in-process and compare every number",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the zoo in this folder; a later run with it computes the pairs still "
        "missing, and the report sums the runs",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        help="stop once this many seconds of table time have passed (at a pair's end; "
        "go on later with --keep)",
    )
    parser.add_argument(
        "--floor-every",
        type=int,
        help="measure the floors between the table's pairs, once per this many pairs computed "
        "(in-process tables; default 5 for ResNets), or 0: once, after the table",
    )
    args = parser.parse_args()
    again = [(k, None) for k in args.also_threads]
    if args.also_turns:
        again.append((None, args.also_turns == "on"))
    if (args.check_local or again) and args.keep:
        parser.error("--check-local and --also-* compare fresh tables: not with --keep")
    if again and args.executor != "local":
        parser.error("--also-threads and --also-turns run the local executor")
    if args.also_threads and min(args.also_threads) < 1:
        parser.error("--also-threads takes counts of at least 1")
    if args.floor_every is None:
        args.floor_every = 5 if args.arch == "resnet20" and args.executor == "local" else 0
    if args.floor_every < 0 or (args.floor_every and args.executor != "local"):
        parser.error("--floor-every takes a count of pairs (0: none), with the local executor")
    device = resolve_device(args.device)
    if args.overlap != "auto":
        OVERLAP[device.type] = args.overlap == "on"
    if args.turns != "auto":
        landscape.BATON[device.type] = args.turns == "on"
    if args.prepare_threads is not None:
        if args.prepare_threads < 1:
            parser.error("--prepare-threads takes a count of at least 1")
        landscape.PREPARE_THREADS = args.prepare_threads
    if args.arch == "mlp":
        arch = "mlp"
        shape: tuple[int, ...] = (784,)
        config: dict[str, Any] = {
            "in_features": 784, "hidden": [args.width, args.width], "classes": 10,
        }  # fmt: skip
        label = f"MLPs 784-{args.width}-{args.width}-10"
    else:
        arch, shape = "resnet", (3, 32, 32)
        config = {"depth": 20, "width": args.resnet_width, "classes": 10}
        label = f"ResNet-20s (width {args.resnet_width})"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.inputs, *shape, generator=gen)
    y = torch.randint(0, 10, (args.inputs,), generator=gen)
    setup = {
        "n": args.n, "arch": arch, "config": config, "points": args.points,
        "inputs": args.inputs, "align": args.align,
    }  # fmt: skip
    result: dict[str, Any] = {
        **setup, "executor": args.executor, "overlap": OVERLAP.get(device.type, False),
        "prepare_threads": landscape.PREPARE_THREADS,
        "turns": landscape.BATON.get(device.type, True),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        log = _Runs(folder / "bench_table.json", setup)
        data = folder / "inputs.npz"
        if not data.exists():
            np.savez(data, x=x.numpy(), y=y.numpy(), x_test=x[:10].numpy(), y_test=y[:10].numpy())
        dataset = f"npz:{data}"
        with Zoo.open(folder / "zoo") as zoo:
            for i in range(len(zoo.entries()), args.n):
                torch.manual_seed(i)
                state = build_model(arch, config).state_dict()
                zoo.add(
                    state, name=f"m{i}", architecture=arch, config=config, dataset=dataset,
                    evaluate=False,
                )  # fmt: skip
            if args.check_local or again:
                shutil.copytree(folder / "zoo", Path(tmp) / "local")
            rss_before = _rss_mb()
            before = zoo.pair_computations
            floors = PairFloors(arch, config, args.points, x, y, device)
            sampler = None
            if args.floor_every:
                cached = zoo.barrier_table(
                    path="geodesic", points=args.points, align=args.align, compute=False
                ).matrix
                done_before = int(np.isfinite(cached[np.triu_indices(args.n, 1)]).sum())
                sampler = _Sampler(floors, done_before, args.floor_every)
            start = time.perf_counter()
            try:
                with tqdm(desc="pairs", unit="pair", disable=args.json) as bar:
                    table = zoo.barrier_table(
                        path="geodesic", points=args.points, device=device,
                        executor=args.executor, address=args.address,
                        progress=_bar(bar, start, args.budget_s, sampler), align=args.align,
                    )  # fmt: skip
            except _OutOfTime:
                table = None
            paused = sampler.paused_s if sampler else 0.0
            run: dict[str, Any] = {
                "computed": zoo.pair_computations - before,
                "table_s": time.perf_counter() - start - paused,
            }
            result["rss_before_table_mb"] = rss_before
            result["peak_rss_mb"] = _rss_mb()
            result["complete"] = table is not None
            if table is not None:
                start = time.perf_counter()
                zoo.barrier_table(
                    path="geodesic", points=args.points, device=device, align=args.align
                )
                result["cached_s"] = time.perf_counter() - start
        if again and table is not None:
            result["again"] = [
                _again(Path(tmp), k, turns, table.matrix, args.points, device, args.align)
                for k, turns in again
            ]
        if args.check_local and table is not None:
            with Zoo.open(Path(tmp) / "local") as local:
                expected = local.barrier_table(
                    path="geodesic", points=args.points, device=device, align=args.align
                )
            result["identical_to_in_process"] = bool(np.array_equal(table.matrix, expected.matrix))
        if run["computed"]:
            if sampler and sampler.samples:
                run |= _mean_floors(sampler.samples) | {"floor_samples": sampler.samples}
            else:
                run |= floors.measure(repeats=3 if arch == "mlp" else 1)
            log.add(run)
        result |= {"this_run": run, **log.totals()}
        for other in result.get("again", []):
            other["ratio"] = other["per_pair_s"] / result["floor_s"]
    result["device"] = str(device)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.n} {label}, {result['pairs']} pairs, {args.points} points, "
        f"{args.inputs} inputs on {device}, pairs aligned by `{args.align}`"
    )
    if not result["complete"]:
        print(
            f"stopped at the budget: {result['computed']} of {result['pairs']} pairs computed so "
            f"far; run again with the same --keep folder to go on"
        )
    if not result["computed"]:
        return
    runs = f" in {result['runs']} runs" if result["runs"] > 1 else ""
    print(
        f"table {result['table_s']:.1f} s{runs} ({result['per_pair_s']:.3f} s per pair); floor "
        f"{result['floor_s']:.3f} s per pair; ratio {result['ratio']:.2f} (goal on CPU <= 1.1)"
    )
    cached = f"cached rerun {result['cached_s']:.3f} s; " if "cached_s" in result else ""
    print(
        f"{cached}peak resident memory {result['peak_rss_mb']:.0f} MB "
        f"({result['rss_before_table_mb']:.0f} MB before the table)"
    )
    if "bn_floor_s" in result:
        print(
            f"BatchNorm statistics at the interior points by a plain loop: "
            f"{result['bn_floor_s']:.3f} s per pair; ratio to the floor with them "
            f"{result['ratio_with_bn']:.2f}"
        )
    for other in result.get("again", []):
        turns = "taking turns" if other["turns"] else "not taking turns"
        print(
            f"with {other['prepare_threads']} pairs prepared at once, {turns}: "
            f"{other['per_pair_s']:.3f} s per pair, ratio {other['ratio']:.2f}, "
            f"the same numbers: {other['identical']}"
        )
    if "identical_to_in_process" in result:
        print(f"identical to the in-process table: {result['identical_to_in_process']}")


def _auto_on_off(parser: argparse.ArgumentParser, flag: str, help: str) -> None:
    """An option that is ``auto`` (what canon does), ``on`` or ``off``."""
    parser.add_argument(flag, choices=["auto", "on", "off"], default="auto", help=help)


def _again(
    tmp: Path,
    threads: int | None,
    turns: bool | None,
    expected: np.ndarray,
    points: int,
    device: torch.device,
    align: str,
) -> dict[str, Any]:
    """The table again, from a fresh copy of the zoo as it was before any pair
    (``tmp / "local"``), with ``threads`` pairs prepared at once and the threads taking
    turns or not (``turns``; None: as in the first table): its time and whether it equals
    ``expected``."""
    kept = landscape.PREPARE_THREADS, dict(landscape.BATON)
    landscape.PREPARE_THREADS = threads or kept[0]
    if turns is not None:
        landscape.BATON[device.type] = turns
    copy = tmp / f"again-{landscape.PREPARE_THREADS}-{landscape.BATON.get(device.type, True)}"
    shutil.copytree(tmp / "local", copy)
    try:
        with Zoo.open(copy) as zoo:
            start = time.perf_counter()
            table = zoo.barrier_table(path="geodesic", points=points, device=device, align=align)
            seconds = time.perf_counter() - start
            pairs = zoo.pair_computations
        used = landscape.PREPARE_THREADS, landscape.BATON.get(device.type, True)
    finally:
        landscape.PREPARE_THREADS = kept[0]
        landscape.BATON.clear()
        landscape.BATON.update(kept[1])
    return {
        "prepare_threads": used[0],
        "turns": used[1],
        "table_s": seconds,
        "per_pair_s": seconds / max(pairs, 1),
        "identical": bool(np.array_equal(table.matrix, expected, equal_nan=True)),
    }


def _rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _OutOfTime(Exception):
    """The run's budget is spent (raised after a pair is cached: the table keeps it)."""


def _bar(bar: Any, start: float, budget_s: float | None, sampler: _Sampler | None) -> Any:
    """A table's progress callback (done, total) driving a tqdm bar, measuring the floors
    between pairs when ``sampler`` is given, and stopping the table once ``budget_s``
    seconds of table time (the floors' pauses left out) have passed since ``start``."""

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if sampler is not None:
            sampler.after(done)
        paused = sampler.paused_s if sampler else 0.0
        spent = time.perf_counter() - start - paused
        if budget_s is not None and spent > budget_s and done < total:
            raise _OutOfTime

    return update


class _Sampler:
    """Measures the floors once each time ``every`` more pairs have been computed (of
    the table's pairs, ``done_before`` were cached when it began), and keeps the
    samples and the time they took."""

    def __init__(self, floors: PairFloors, done_before: int, every: int) -> None:
        self.floors, self.done_before, self.every = floors, done_before, every
        self.samples: list[dict[str, float]] = []
        self.paused_s = 0.0

    def after(self, done: int) -> None:
        """Sample the floors if another ``every`` pairs are done since the last sample
        (``done``: the table's pairs done so far, cached ones included)."""
        if done - self.done_before < self.every * (len(self.samples) + 1):
            return
        start = time.perf_counter()
        self.samples.append(self.floors.measure(repeats=1, warm_up=False))
        self.paused_s += time.perf_counter() - start


def _mean_floors(samples: list[dict[str, float]]) -> dict[str, float]:
    """Each floor's mean over the samples."""
    return {k: sum(s[k] for s in samples) / len(samples) for k in samples[0]}


class _Runs:
    """The runs that computed one table's pairs, kept in a JSON file beside its zoo (a
    table too long for one sitting is computed over several runs with ``--keep``)."""

    def __init__(self, file: Path, setup: dict[str, Any]) -> None:
        self.file, self.setup = file, setup
        self.runs: list[dict[str, Any]] = []
        if file.exists():
            kept = json.loads(file.read_text())
            if kept["setup"] != setup:
                raise SystemExit(f"{file.parent} holds another table: {kept['setup']}")
            self.runs = kept["runs"]

    def add(self, run: dict[str, Any]) -> None:
        """Record a run that computed pairs: its count, time and floors."""
        self.runs.append(run)
        self.file.write_text(json.dumps({"setup": self.setup, "runs": self.runs}, indent=1))

    def totals(self) -> dict[str, Any]:
        """Over every run: pairs computed, table time, time per pair, the floors per pair
        (weighted by each run's pairs) and the ratios of the time to them."""
        n = self.setup["n"]
        out: dict[str, Any] = {"pairs": n * (n - 1) // 2, "runs": len(self.runs)}
        computed = sum(r["computed"] for r in self.runs)
        out["computed"] = computed
        if not computed:
            return out
        table_s = sum(r["table_s"] for r in self.runs)
        floor = sum(r["computed"] * r["floor_s"] for r in self.runs)
        out |= {
            "table_s": table_s, "per_pair_s": table_s / computed,
            "floor_s": floor / computed, "ratio": table_s / floor,
        }  # fmt: skip
        if all("bn_floor_s" in r for r in self.runs):
            bn = sum(r["computed"] * r["bn_floor_s"] for r in self.runs)
            out |= {"bn_floor_s": bn / computed, "ratio_with_bn": table_s / (floor + bn)}
        return out


if __name__ == "__main__":
    main()

"""Timing shared by the benchmarks: median wall time after a warm-up run."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def path_arguments(parser: argparse.ArgumentParser, inputs: int, points: int) -> None:
    """The options of a benchmark that times paths' points on a device: ``--device``,
    ``--inputs``, ``--points``, ``--repeats`` (median of) and ``--json``."""
    parser.add_argument("--device", default="auto")
    parser.add_argument("--inputs", type=int, default=inputs)
    parser.add_argument("--points", type=int, default=points)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the device type (``cpu``)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def report_header(benchmark: str, device: torch.device, inputs: int, points: int) -> dict:
    """The fields that open a path benchmark's JSON report: what ran, where, on how much."""
    return {
        "benchmark": benchmark,
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "inputs": inputs,
        "points": points,
    }


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def median_time(
    fn: Callable[[], object], repeats: int, sync: Callable[[], None], warm_up: bool = True
) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs, after one warm-up run (unless
    ``warm_up`` is false: for runs of minutes, whose one-time costs are negligible)."""
    if warm_up:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

"""Timing shared by the benchmarks: median wall time after a warm-up run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the device type (``cpu``)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


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

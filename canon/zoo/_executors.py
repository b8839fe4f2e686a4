"""Running a table's uncached pairs: in this process, or as tasks on a Ray cluster.

Whatever runs the computations, only this process (the driver) writes their results
to the zoo's index, a few at a time as they arrive: a worker never opens the index.
A computation that fails, or an interrupt (Ctrl-C), leaves every result written so far
complete and cached, and nothing else.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from canon.errors import CanonError, ConfigError
from canon.zoo._pair_work import (
    PairBlock,
    PairTask,
    SharedTemplates,
    compute_block,
    compute_pairs,
)
from canon.zoo._records import EXECUTORS, PairResult, canonical_json

if TYPE_CHECKING:
    from canon.zoo._zoo import Zoo

__all__ = ["EXECUTORS", "check_executor", "run_pairs"]

_FLUSH_RESULTS = 64  # results written to the index in one transaction, at most …
_FLUSH_SECONDS = 1.0  # … or once this long has passed since the last write (the first
# result is written at once): a kill loses at most about a second of finished pairs
_TASKS_PER_CPU = 4  # Ray blocks per cluster CPU: small enough to balance, large to amortize
_MAX_BLOCK = 64  # pairs per Ray task, at most

Counter = Callable[[int], None]


def run_pairs(
    zoo: Zoo,
    tasks: Sequence[PairTask],
    device: torch.device,
    *,
    executor: str = "local",
    address: str | None = None,
    done: Counter | None = None,
    metric: str,
) -> dict[tuple[str, str], object]:
    """Compute ``tasks`` with ``executor`` and cache their results; each result's
    ``metric`` by (first id, second id) (only that is kept: a table's memory does not grow
    with whole curves). ``done(n)`` is told of each n results computed (and cached at
    once, or within about a second).

    ``ray`` runs blocks of pairs as Ray tasks (:func:`_run_on_ray`) on the cluster at
    ``address`` (default: the one this process is connected to, or a new local one).
    """
    check_executor(executor, address)
    writer = _Writer(zoo, done, metric)
    try:
        if executor == "ray":
            _run_on_ray(zoo, tasks, device, address, writer)
        else:
            for task, result in compute_pairs(SharedTemplates(zoo), tasks, device):
                writer.add(
                    task.first.id,
                    task.second.id,
                    task.key.kind,
                    task.key.hash,
                    canonical_json(result),
                )
    finally:
        writer.flush()
    return writer.results


def check_executor(executor: str, address: str | None) -> None:
    """Refuse an unknown ``executor``, or an ``address`` without the ``ray`` executor."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor `{executor}`; choose one of {', '.join(EXECUTORS)}")
    if address is not None and executor != "ray":
        raise ConfigError("an `address` is for the `ray` executor")


class _Writer:
    """Caches results in the zoo's index in batches (one transaction each)."""

    def __init__(self, zoo: Zoo, done: Counter | None, metric: str) -> None:
        self.zoo = zoo
        self.done = done
        self.metric = metric
        self.pending: list[PairResult] = []
        self.results: dict[tuple[str, str], object] = {}
        self.last = -math.inf  # the first result is written at once

    def add(self, first: str, second: str, kind: str, key: str, result: str) -> None:
        """Hold one result (canonical JSON); written at the next flush, which comes once
        :data:`_FLUSH_RESULTS` are held or :data:`_FLUSH_SECONDS` have passed."""
        value = json.loads(result)
        self.pending.append(PairResult(first, second, kind, key, value))
        self.results[(first, second)] = value.get(self.metric)
        if self.done is not None:
            self.done(1)
        if len(self.pending) >= _FLUSH_RESULTS or time.monotonic() - self.last > _FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the held results in one transaction."""
        if not self.pending:
            return
        self.zoo.pairs.put(self.pending)
        self.zoo.pair_computations += len(self.pending)
        self.pending = []
        self.last = time.monotonic()


def _blocks(tasks: Sequence[PairTask], cpus: int) -> list[list[PairTask]]:
    """``tasks`` cut into blocks of one family, about :data:`_TASKS_PER_CPU` per CPU."""
    size = max(1, min(_MAX_BLOCK, math.ceil(len(tasks) / (_TASKS_PER_CPU * max(1, cpus)))))
    families: dict[str, list[PairTask]] = {}
    for task in tasks:
        families.setdefault(task.first.family, []).append(task)
    return [f[i : i + size] for f in families.values() for i in range(0, len(f), size)]


def _ray_block(block: PairBlock, device: str) -> list[tuple[str, str, str, str]]:
    """A Ray task: the block's objects fetched from Ray's object store where they were
    sent, then :func:`~canon.zoo._pair_work.compute_block`."""
    import ray

    objects = {
        k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in block.objects.items()
    }
    return compute_block(replace(block, objects=objects), device)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("the `ray` executor needs Ray: pip install 'canon[ray]'") from None
    return ray


def _run_on_ray(
    zoo: Zoo,
    tasks: Sequence[PairTask],
    device: torch.device,
    address: str | None,
    writer: _Writer,
) -> None:
    """Blocks of ``tasks`` as Ray tasks, their results cached as each block returns.

    Connects to the cluster at ``address`` (or to the one this process is already
    connected to; with neither, starts a local one and stops it at the end). Workers
    on this machine (no ``address``) read objects from the zoo's folder; for a
    cluster at an ``address`` each object is sent once through Ray's object store,
    since its nodes need not share the disk. Ray runs a task again when its worker
    or node is lost (up to 3 times); an error in a task, or an interrupt, cancels
    the blocks not yet returned. With a CUDA ``device`` each task takes one of the
    cluster's GPUs.
    """
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        # "local": a cluster of our own, never one that `ray start` left running here
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False)
    try:
        ids = sorted({e.id for t in tasks for e in (t.first, t.second)})
        if address is None:
            objects: dict[str, Any] = {i: str(zoo.objects.path(i)) for i in ids}
        else:
            objects = {i: ray.put(zoo.objects.path(i).read_bytes()) for i in ids}
        cpus = int(ray.cluster_resources().get("CPU", 1))
        # on a GPU, each task asks Ray for one and sees it as the only device, `cuda`
        gpus = 1 if device.type == "cuda" else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=3)(_ray_block)
        where = "cuda" if gpus else str(device)
        alignments = None
        if tasks and tasks[0].key.reference is not None:  # found here once, sent with blocks
            alignments = {e.id: zoo.alignment(e) for t in tasks for e in (t.first, t.second)}
        pending = {
            remote.remote(PairBlock.of(block, objects, alignments), where): block
            for block in _blocks(tasks, cpus)
        }
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    block = pending.pop(ref)
                    try:
                        rows = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.cause
                        raise cause if isinstance(cause, CanonError) else exc from None
                    kind = block[0].key.kind
                    for first, second, key, result in rows:
                        writer.add(first, second, kind, key, result)
        finally:  # an error or an interrupt: the blocks still running are not wanted
            if not started:  # (a cluster of our own stops below, and its tasks with it)
                for ref in pending:
                    ray.cancel(ref)  # not force: Ray 2.60 can abort the driver on a race
    finally:
        if started:
            ray.shutdown()

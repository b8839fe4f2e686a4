"""The job runner: worker threads that take jobs from the zoo's queue and run them.

Jobs never run on the event loop. Each worker thread opens its own
:class:`~canon.zoo.Zoo` (its in-memory caches are not shared between
threads) and loops: claim the oldest queued job, run it, store the result or
the error. Progress is written at most every :data:`PROGRESS_INTERVAL_S`. On
an orderly stop a running job is put back in the queue at its next progress
report; after a crash, :meth:`~canon.zoo.JobQueue.recover` re-queues it when
the next server starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from canon.errors import CanonError
from canon.service._errors import public_message
from canon.service._work import run_job
from canon.zoo import Job, Zoo

__all__ = ["PROGRESS_INTERVAL_S", "JobRunner"]

PROGRESS_INTERVAL_S = 0.25
IDLE_POLL_S = 2.0  # also picks up jobs queued by another process on the same zoo
log = logging.getLogger("canon.service")


class _Stopping(Exception):
    """Raised inside a job's progress callback when the runner stops."""


class JobRunner:
    """``workers`` threads running the zoo's queued jobs on ``device``."""

    def __init__(
        self, root: Path, *, device: str = "auto", workers: int = 1, trust_code: bool = False
    ) -> None:
        self.root = root
        self.device = device
        self.trust_code = trust_code
        self.workers = workers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Re-queue jobs a dead server left running, then start the worker threads."""
        with Zoo.open(self.root, create=False, trust_code=self.trust_code) as zoo:
            requeued, failed = zoo.jobs.recover()
        if requeued or failed:
            log.info("jobs from a previous run: %d re-queued, %d given up", requeued, failed)
        for i in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"canon-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Tell idle workers that a job was queued."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers; a running job goes back to the queue at its next progress report."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]

    def _loop(self) -> None:
        zoo = Zoo.open(self.root, create=False, trust_code=self.trust_code)
        try:
            while not self._stop.is_set():
                try:
                    job = zoo.jobs.claim()
                except Exception:  # a locked or broken index: log and retry later
                    log.exception("could not claim a job")
                    job = None
                if job is None:
                    self._wake.wait(IDLE_POLL_S)
                    self._wake.clear()
                    continue
                self._run(zoo, job)
        finally:
            zoo.close()

    def _progress(self, zoo: Zoo, job: Job) -> Callable[[int, int], None]:
        """A progress callback: writes at most every PROGRESS_INTERVAL_S, stops on request."""
        last = [0.0]

        def update(done: int, total: int) -> None:
            if self._stop.is_set():
                raise _Stopping
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or done >= total:
                zoo.jobs.report_progress(job.id, done, total)
                last[0] = now

        return update

    def _run(self, zoo: Zoo, job: Job) -> None:
        log.info("job %s (%s) started", job.id, job.kind)
        try:
            result = run_job(zoo, job.kind, job.params, self.device, self._progress(zoo, job))
        except _Stopping:
            zoo.jobs.release(job.id)
            log.info("job %s (%s) re-queued: the server is stopping", job.id, job.kind)
            return
        except CanonError as exc:
            zoo.jobs.fail(job.id, type(exc).__name__, public_message(exc, self.root))
            log.info("job %s (%s) failed: %s", job.id, job.kind, exc)
            return
        except Exception as exc:  # a bug, not bad input: keep the worker alive and say so
            log.exception("job %s (%s) crashed", job.id, job.kind)
            zoo.jobs.fail(job.id, "InternalError", f"{type(exc).__name__}: {exc}")
            return
        zoo.jobs.finish(job.id, result)
        log.info("job %s (%s) done", job.id, job.kind)

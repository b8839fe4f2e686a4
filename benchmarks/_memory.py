"""Resident memory of the benchmark's own process: now, and the peak while a block runs."""

from __future__ import annotations

import os
import threading


def resident_mb() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """The highest resident memory seen (every 10 ms) while the block runs, in MiB."""

    def __enter__(self) -> PeakMemory:
        self.mb = resident_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(0.01):
            self.mb = max(self.mb, resident_mb())

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.mb = max(self.mb, resident_mb())

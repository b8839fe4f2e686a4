"""Where the core works on the host outside Python, and a baton threads hand over there.

Threads that prepare pairs at once share one interpreter. Each tensor op lets go of the
GIL while it runs and takes it back after, so threads that all launch ops pass the GIL
to one another at every op: where ops are small (a GPU's launches, a small network's
work) each thread then launches at a fraction of one thread's pace. Threads that hold a
:class:`Baton` launch one at a time: the holder hands it over only where the core works
outside Python (:func:`outside_python`: an assignment solve on the host, a wait for
another thread), so one thread's solves still overlap with another's ops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Baton", "outside_python"]

_HELD = threading.local()  # the baton this thread holds, if any


class Baton:
    """A turn at running Python among threads (:mod:`canon.core.host_work`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the block holding the baton (waiting for it first), but where it works
        outside Python (:func:`outside_python`)."""
        if getattr(_HELD, "baton", None) is not None:
            raise RuntimeError("a thread holds one baton at a time")
        self._lock.acquire()
        _HELD.baton = self
        try:
            yield
        finally:
            _HELD.baton = None
            self._lock.release()


@contextmanager
def outside_python() -> Iterator[None]:
    """Mark work of this thread that runs outside Python or waits (a solve, another
    thread's result): the baton it holds, if any, goes to another thread meanwhile,
    and is taken back after."""
    baton: Baton | None = getattr(_HELD, "baton", None)
    if baton is None:
        yield
        return
    _HELD.baton = None
    baton._lock.release()
    try:
        yield
    finally:
        baton._lock.acquire()
        _HELD.baton = baton

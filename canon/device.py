"""Resolving the ``--device`` option (``auto``, ``cpu``, ``cuda``, ``cuda:N``), work
queued beside the device's other work (:func:`side_stream`), and how much a table keeps
on a device for the pairs that follow (:func:`keep_bytes`)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from canon.errors import ConfigError

__all__ = ["KEEP_BYTES", "in_lanes", "keep_bytes", "queued_mark", "resolve_device", "side_stream"]

_T = TypeVar("_T")

#: By device type, the bytes of networks' copies a table keeps for the pairs that follow
#: (entries' weights as read, their normalized copies: each budget on its own), the most
#: recently used; only networks of at most a sixteenth of it are kept. On a CPU only
#: small networks (up to 1 MiB, 16 MiB in all): there reading or normalizing a bigger one
#: costs little beside its pairs' evaluations, while copies kept among the evaluations'
#: buffers fragment the heap (a table of 16 MLPs 784-512-512-10 on 10,000 inputs peaked
#: at 1,041 MB with 256 MiB kept, 691 MB with neither, in the same time). Elsewhere (a GPU,
#: where each read is a copy to it and each normalization launches and reads) 256 MiB.
KEEP_BYTES: dict[str, int] = {"cpu": 1 << 24}
_KEEP_ELSEWHERE = 1 << 28


def keep_bytes(device: torch.device) -> int:
    """:data:`KEEP_BYTES` for ``device``."""
    return KEEP_BYTES.get(device.type, _KEEP_ELSEWHERE)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` picks the first GPU when one is present."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device `{name}`; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device `{name}` asked for, but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device `{name}` asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device `{name}`; use auto, cpu, cuda or cuda:N")
    return device


def queued_mark(device: torch.device) -> torch.cuda.Event | None:
    """A mark of the work queued so far on ``device``'s current stream, for
    :func:`side_stream` to start after (a CUDA event; ``None`` on other devices, whose
    work is done when queued)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()  # type: ignore[no-untyped-call]
    event.record(torch.cuda.current_stream(device))
    return event


# side streams per device for the process, a few "lanes" of them: a table's preparing
# threads are new each time, and a stream per thread would keep blocks of memory cached
# for streams no longer used (tables preparing at once share them: their work is only
# ordered, not mixed up). They run at the device's high priority: their work is small and
# its host reads wait for it, while the evaluations beside it fill the device.
_SIDE: dict[tuple[torch.device, int], torch.cuda.Stream] = {}
_SIDE_LOCK = threading.Lock()


@contextmanager
def side_stream(
    device: torch.device, after: torch.cuda.Event | None = None, lane: int = 0
) -> Iterator[None]:
    """Queue the block's work for a CUDA ``device`` on a side stream of its own (one per
    ``lane``), started once the work ``after`` marks is done (:func:`queued_mark`), and
    wait for all of it when the block ends. Work another thread queues meanwhile on
    another stream then neither waits for the block's nor it for that. On other devices
    the block runs as is."""
    if device.type != "cuda":
        yield
        return
    with _SIDE_LOCK:
        if (device, lane) not in _SIDE:
            _SIDE[device, lane] = torch.cuda.Stream(device, priority=-1)  # type: ignore[no-untyped-call]
        stream = _SIDE[device, lane]
    if after is not None:
        stream.wait_event(after)
    try:
        with torch.cuda.stream(stream):
            yield
    finally:
        stream.synchronize()  # its tensors are complete before another stream reads them


def in_lanes(fn: Callable[[int], _T], device: torch.device, lanes: int) -> Callable[[int], _T]:
    """``fn`` to be called from other threads, call ``i``'s work for a CUDA ``device``
    queued on side stream lane ``1 + i % lanes`` (:func:`side_stream`), after the work
    queued so far on the stream current here, and done when the call returns: calls in
    different threads then neither wait for each other's work when they read values off
    the device, nor queue behind the work of another thread's stream. Elsewhere, or for
    one lane (calls made in the caller's thread), ``fn`` itself."""
    if device.type != "cuda" or lanes <= 1:
        return fn
    mark = queued_mark(device)

    def run(i: int) -> _T:
        with side_stream(device, after=mark, lane=1 + i % lanes):
            return fn(i)

    return run

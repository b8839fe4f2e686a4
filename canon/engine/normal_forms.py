"""Networks' working copies, normalized, made once for all the pairs a network is in.

A table's pair needs both ends on the device in their working dtype and normalized
(:func:`~canon.core.normalize_with_scales`). An entry is in N - 1 of a table's pairs;
normalizing it once instead of once a pair takes a small network's preparation about a
fifth of its ops and half of its reads off the device (each a wait for the device).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from canon.core import Spec, UnitScales, normalize_with_scales
from canon.core.host_work import outside_python
from canon.core.precision import to_working
from canon.device import keep_bytes, queued_mark

__all__ = ["NormalForm", "NormalForms"]


@dataclass(frozen=True)
class NormalForm:
    """A network on its working device and dtype (``state``), normalized (``normalized``),
    and the scales normalization took out (``scales``). Shared by the pairs the network
    is in: no one writes into its dicts or tensors."""

    state: dict[str, Tensor]
    normalized: dict[str, Tensor]
    scales: UnitScales


@dataclass
class _Held:
    """A kept form with what it was made from (held, so that no other tensor takes
    their ids while it is kept) and a mark of its work on the device."""

    source: tuple[Tensor, ...]
    spec: Spec
    device: torch.device
    form: NormalForm | None
    mark: torch.cuda.Event | None
    ready: threading.Event
    size: int


class NormalForms:
    """:meth:`of` a network: its :class:`NormalForm`, made the first time these very
    tensors are asked for on a device and dtype, and again after the budget let it go
    (``budget`` bytes of working and normalized copies, the most recently used, networks
    up to a sixteenth of it; by default the device's :func:`~canon.device.keep_bytes`).
    Threads may ask at once: one makes a form, the others wait for it; on a CUDA device
    a thread's stream waits for the work that made a form on another's stream."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self._held: OrderedDict[tuple[object, ...], _Held] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def of(
        self, state: Mapping[str, Tensor], spec: Spec, device: torch.device, dtype: torch.dtype
    ) -> NormalForm:
        """``state`` on ``device`` in ``dtype`` (:func:`~canon.core.precision.to_working`)
        and normalized under ``spec`` (unchecked: checked by the caller)."""
        source = tuple(state.values())
        key = (tuple(state), tuple(map(id, source)), id(spec), device, dtype)
        made: _Held | None = None
        with self._lock:
            # a kept form holds its tensors and spec: no other object takes their ids
            found = self._held.get(key)
            if found is not None:
                self._held.move_to_end(key)
            elif _small(source, self._budget(device)):
                made = _Held(source, spec, device, None, None, threading.Event(), 0)
                self._held[key] = made
            else:
                return _made(state, spec, device, dtype)  # too big to keep
        if made is not None:
            try:
                made.form = _made(state, spec, device, dtype)
                made.mark = queued_mark(device)
            finally:
                made.ready.set()
                self._kept(key, made)
            return made.form
        assert found is not None
        with outside_python():  # its maker may need the baton this thread holds
            found.ready.wait()
        if found.form is None:  # its maker failed: this tries again (and raises the same)
            return _made(state, spec, device, dtype)
        if found.mark is not None:
            torch.cuda.current_stream(device).wait_event(found.mark)
        return found.form

    def _budget(self, device: torch.device) -> int:
        return self.budget if self.budget is not None else keep_bytes(device)

    def _kept(self, key: tuple[object, ...], held: _Held) -> None:
        """Count a made form against the budget (dropped if it failed), dropping the
        least recently used beyond it."""
        with self._lock:
            if self._held.get(key) is not held:  # dropped meanwhile
                return
            if held.form is None:
                del self._held[key]
                return
            form = held.form
            held.size = sum(_bytes(t) for d in (form.state, form.normalized) for t in d.values())
            self._bytes += held.size
            budget = self._budget(held.device)
            while self._bytes > budget and len(self._held) > 1:
                _, dropped = self._held.popitem(last=False)
                self._bytes -= dropped.size


def _made(
    state: Mapping[str, Tensor], spec: Spec, device: torch.device, dtype: torch.dtype
) -> NormalForm:
    """The normal form of ``state``, made now."""
    working = to_working(state, device, dtype)
    normalized, scales = normalize_with_scales(working, spec, check=False)
    return NormalForm(working, normalized, scales)


def _small(source: tuple[Tensor, ...], budget: int) -> bool:
    """Whether a network of these tensors is kept (at most a sixteenth of the budget)."""
    return sum(_bytes(t) for t in source) <= budget // 16


def _bytes(t: Tensor) -> int:
    return t.numel() * t.element_size()

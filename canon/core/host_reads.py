"""Values read off a device together: each read waits for the device's queue to drain (a
host sync on a GPU), so tensors wanted on the host are joined per device and read once.
While a thread waits for a read, the baton it may hold goes to another thread
(:func:`~canon.core.host_work.outside_python`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from canon.core.host_work import outside_python

__all__ = ["on_host", "read"]


def read(t: Tensor) -> Tensor:
    """``t`` on the CPU: copied off its device (the baton handed over meanwhile), or
    itself if it is there."""
    if t.device.type == "cpu":
        return t
    with outside_python():
        return t.cpu()


def on_host(tensors: Sequence[Tensor]) -> list[Tensor]:
    """``tensors`` (of one dtype) on the CPU, in order: those on other devices joined and
    copied off each device at once, then cut back into their shapes; CPU tensors as
    they are."""
    out = list(tensors)
    places: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        if t.device.type != "cpu":
            places.setdefault(t.device, []).append(i)
    for where in places.values():
        joined = read(torch.cat([tensors[i].reshape(-1) for i in where]))
        parts = torch.split(joined, [tensors[i].numel() for i in where])
        for i, part in zip(where, parts, strict=True):
            out[i] = part.reshape(tensors[i].shape)
    return out

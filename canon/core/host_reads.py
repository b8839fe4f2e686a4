"""Values read off a device together: each read waits for the device's queue to drain (a
host sync on a GPU), so tensors wanted on the host are joined per device and read once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["on_host"]


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
        joined = torch.cat([tensors[i].reshape(-1) for i in where]).cpu()
        parts = torch.split(joined, [tensors[i].numel() for i in where])
        for i, part in zip(where, parts, strict=True):
            out[i] = part.reshape(tensors[i].shape)
    return out

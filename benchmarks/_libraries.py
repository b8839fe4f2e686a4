"""Optional model libraries for the benchmarks."""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

_KEEP: list[Any] = []  # the op schemas live as long as their library objects


def torchvision_or_none() -> Any:
    """torchvision, imported after defining the op schemas its C extension would register
    (``nms``, ``qnms``), which a CPU torch without that extension lacks; None when absent."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        lib = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # type: ignore[no-untyped-call]
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # type: ignore[no-untyped-call]
        _KEEP.append(lib)
    except RuntimeError:
        pass  # the schemas are registered already (torchvision's own extension)
    import torchvision

    return torchvision

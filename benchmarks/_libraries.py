"""Optional model libraries for the benchmarks."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import torch

_KEEP: list[Any] = []  # the op schemas live as long as their library objects


def torchvision_or_none() -> Any:
    """torchvision, or None when absent. Where its C extension does not load (a PyPI wheel
    built for CUDA torch beside a CPU torch), the op schemas the extension would register
    (``nms``, ``qnms``) are defined first, since torchvision's Python code refers to them;
    where it loads (a GPU machine), they are left to it."""
    if importlib.util.find_spec("torchvision") is None:
        return None
    try:
        import torchvision
    except RuntimeError:  # "operator torchvision::nms does not exist"
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # type: ignore[no-untyped-call]
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")  # type: ignore[no-untyped-call]
        _KEEP.append(lib)
        import torchvision

    return torchvision

"""Optional vision model libraries (torchvision, timm) for tests.

A torchvision wheel built against another torch build (here: CUDA torchvision
next to a CPU-only torch) cannot load its C++ kernels, and then its import
fails with "operator torchvision::nms does not exist" when it registers meta
kernels for ops that were never defined. Defining the two op schemas first
lets the Python side load; canon never calls those ops. Where torchvision
imports as it is, nothing is defined (its own kernels own the namespace).
"""

from __future__ import annotations

import sys
from types import ModuleType

import pytest
import torch

__all__ = ["vision"]

# kept alive for the whole session: the op schemas live as long as this object
_LIBRARY: torch.library.Library | None = None


def _define_ops() -> None:
    global _LIBRARY
    if _LIBRARY is not None:
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARY = lib


def _import_torchvision() -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return  # not installed: importorskip below skips
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        # drop the half-imported package and retry with the schemas defined
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _define_ops()


def vision() -> tuple[ModuleType, ModuleType]:
    """``(torchvision, timm)``, importable on this torch build; skips the test without them.

    Idempotent: the op schemas are defined at most once per process.
    """
    if "torchvision" not in sys.modules:
        _import_torchvision()
    torchvision = pytest.importorskip("torchvision")
    timm = pytest.importorskip("timm")
    return torchvision, timm

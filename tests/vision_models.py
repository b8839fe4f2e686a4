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

__all__ = ["small_timm_vit", "vision"]

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


def small_timm_vit(name: str, side: int) -> tuple[torch.nn.Module, object, dict, torch.Tensor]:
    """timm's ViT ``name`` with two blocks on ``side`` x ``side`` images, in float64:
    (model, its spec, its weights each moved by noise of 0.3, two random images)."""
    from canon.core import spec_from_module

    _, timm = vision()
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, pretrained=False, img_size=side, depth=2)
    model = model.double().eval()
    spec = spec_from_module(model, (3, side, side))
    gen = torch.Generator().manual_seed(1)
    state = {
        k: v + 0.3 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
        if v.is_floating_point()
        else v
        for k, v in model.state_dict().items()
    }
    x = torch.randn(2, 3, side, side, generator=gen, dtype=torch.float64)
    return model, spec, state, x

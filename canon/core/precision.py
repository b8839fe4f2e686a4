"""The precision networks are compared and evaluated in.

States may come in bfloat16, float16, float32 or float64, and a pair may mix them.
Products that tell units apart, and forward passes whose errors and losses are
reported, are taken in the *working dtype*: the widest floating dtype involved, and at
least float32 (half precision loses the digits that tell near-ties apart, and CPUs run
it slowly). Upcasting is exact, so a bfloat16 network evaluated in float32 is the same
network; the states themselves keep their dtypes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

__all__ = ["state_dtype", "to_working", "working_dtype"]


def working_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The widest of the floating ``dtypes``, and at least float32."""
    floating = [d for d in dtypes if d.is_floating_point]
    return functools.reduce(torch.promote_types, floating, torch.float32)


def state_dtype(*states: Mapping[str, Tensor] | None) -> torch.dtype:
    """:func:`working_dtype` of every floating tensor of ``states`` (``None`` skipped)."""
    found: Iterable[torch.dtype] = {t.dtype for s in states if s is not None for t in s.values()}
    return working_dtype(*found)


def to_working(
    state: Mapping[str, Tensor], device: torch.device | str, dtype: torch.dtype
) -> dict[str, Tensor]:
    """``state`` on ``device`` with its floating tensors in ``dtype`` (the others, such
    as BatchNorm's step counters, keep theirs); tensors already so are not copied."""
    return {
        k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in state.items()
    }

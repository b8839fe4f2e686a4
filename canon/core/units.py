"""Per-unit views and updates of tensors along a unit axis.

Unit ``k`` of a group owns index ``k`` of a tensor's unit axis, or the
contiguous block ``[k * block, (k + 1) * block)`` when a conv output was
flattened into a linear layer. These helpers are the only place that knows
that layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from canon.core.spec import UnitGroup

__all__ = ["bn_gain", "permute_units", "scale_units", "unit_norms", "unit_vectors"]


def _expand(values: Tensor, block: int) -> Tensor:
    return values if block == 1 else values.repeat_interleave(block)


def scale_units(t: Tensor, axis: int, factors: Tensor, block: int = 1) -> Tensor:
    """``t`` with unit ``k``'s slice along ``axis`` multiplied by ``factors[k]``."""
    shape = [1] * t.ndim
    shape[axis] = -1
    return t * _expand(factors, block).to(device=t.device, dtype=t.dtype).reshape(shape)


def permute_units(t: Tensor, axis: int, perm: Tensor, block: int = 1) -> Tensor:
    """``t`` with its units reordered along ``axis``: new unit ``k`` is old unit ``perm[k]``."""
    if block == 1:
        return t.index_select(axis, perm)
    offsets = torch.arange(block, device=perm.device)
    index = (perm.unsqueeze(1) * block + offsets).reshape(-1)
    return t.index_select(axis, index)


def unit_norms(weight: Tensor) -> Tensor:
    """L2 norm of each unit's incoming weights (rows of a linear weight, filters of a conv)."""
    norms: Tensor = torch.linalg.vector_norm(weight.reshape(weight.shape[0], -1), dim=1)
    return norms


def bn_gain(state: Mapping[str, Tensor], group: UnitGroup) -> Tensor | None:
    """Per-unit factor gamma / sqrt(var + eps) of the group's BatchNorm, or None without one."""
    bn = group.batchnorm
    if bn is None:
        return None
    gain: Tensor = state[bn.weight] / torch.sqrt(state[bn.running_var] + bn.eps)
    return gain


def unit_vectors(state: Mapping[str, Tensor], group: UnitGroup) -> Tensor:
    """Each unit's effective incoming weight as a row: ``[size, fan_in]``.

    For a unit followed by BatchNorm the effective weight is
    gamma / sqrt(var + eps) * w (DESIGN §3 "Normalization").
    """
    w: Tensor = state[group.weight].reshape(group.size, -1)
    gain = bn_gain(state, group)
    if gain is not None:
        w = w * gain.unsqueeze(1)
    return w

"""Normalization (the paper's Alg. 1): fix every hidden unit's scale.

Pure function on state dicts; see DESIGN §3 "Normalization" for the contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from canon.core.spec import Spec, UnitGroup, check_state
from canon.core.units import scale_units, unit_norms

__all__ = ["normalize"]


def normalize(state: Mapping[str, Tensor], spec: Spec, *, check: bool = True) -> dict[str, Tensor]:
    """Return ``state`` with every hidden unit's scale normalized (Alg. 1).

    For each group in forward order with a ``scale`` symmetry, unit ``k``'s
    incoming weights and bias are divided by n_k, the L2 norm of its incoming
    weights, and its outgoing weights multiplied by n_k. A unit followed by
    BatchNorm is normalized through its effective weight
    gamma_k / sqrt(var_k + eps) * w_k: w_k goes to unit norm with the running
    mean and variance adjusted to match (exact up to the eps term), the sign
    of gamma_k is made non-negative (negating w_k, b_k, mean_k and gamma_k,
    which is exact), and gamma_k, beta_k are divided by the effective norm,
    compensated in the outgoing weights. Scale-invariant groups (sign
    activations) get unit-norm incoming weights with no compensation; other
    groups (tanh) keep their scale, though a BatchNorm after them still gets
    its unit-norm w_k and non-negative gamma_k. The output layer is scaled globally so the
    Frobenius norm of its weight is sqrt(H^L).

    The eval-mode function is preserved up to the output layer's global
    positive factor (the argmax is unchanged), and ``normalize`` is
    idempotent. Units with all-zero incoming weights are left as they are.
    The input is not modified; untouched tensors are shared with it.
    ``check=False`` skips validating ``state`` against ``spec`` (for callers
    that already did).
    """
    if check:
        check_state(state, spec, "`state`")
    out = dict(state)
    for group in spec.groups:
        _normalize_group(out, group)
    if spec.output is not None:
        layer = spec.output
        norm = torch.linalg.vector_norm(out[layer.weight])
        if float(norm) > 0:
            factor = math.sqrt(layer.size) / norm
            out[layer.weight] = out[layer.weight] * factor
            if layer.bias is not None:
                out[layer.bias] = out[layer.bias] * factor
    return out


def _safe(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, torch.ones_like(x))


def _normalize_group(out: dict[str, Tensor], group: UnitGroup) -> None:
    bn = group.batchnorm
    if bn is None and not group.normalized:
        return  # e.g. tanh: not homogeneous, the unit keeps its scale
    norms = _safe(unit_norms(out[group.weight]))
    inverse = 1.0 / norms
    weight = scale_units(out[group.weight], 0, inverse)
    bias = None if group.bias is None else out[group.bias] * inverse
    compensation = norms
    if bn is not None:
        # BN's input scale is a symmetry whatever the activation: w -> w / n with
        # mean -> mean / n, var -> var / n^2; and so is (w, b, mean, gamma) -> -(...).
        mean = out[bn.running_mean] * inverse
        var = out[bn.running_var] * inverse.square()
        gamma, beta = out[bn.weight], out[bn.bias]
        flip = torch.where(gamma < 0, -torch.ones_like(gamma), torch.ones_like(gamma))
        weight = scale_units(weight, 0, flip)
        bias = None if bias is None else bias * flip
        mean, gamma = mean * flip, gamma * flip
        if group.normalized:
            compensation = _safe(gamma / torch.sqrt(var + bn.eps))
            gamma, beta = gamma / compensation, beta / compensation
        out[bn.weight], out[bn.bias] = gamma, beta
        out[bn.running_mean], out[bn.running_var] = mean, var
    out[group.weight] = weight
    if group.bias is not None:
        assert bias is not None
        out[group.bias] = bias
    if group.symmetry == "scale":
        for axis in group.outgoing:
            out[axis.name] = scale_units(out[axis.name], axis.axis, compensation, axis.block)

"""Normalization (the paper's Alg. 1): fix every hidden unit's scale.

Pure function on state dicts; see DESIGN §3 "Normalization" for the contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from canon.core.spec import (
    Producer,
    Spec,
    TensorAxis,
    UnitGroup,
    check_state,
    forward_order,
)
from canon.core.units import (
    bn_gain,
    scale_batchnorm_input,
    scale_units,
    unit_norms,
    unit_slices,
)
from canon.errors import SpecMismatchError

__all__ = ["UnitScales", "normalize", "normalize_with_scales", "rescale", "unit_scales"]


def normalize(state: Mapping[str, Tensor], spec: Spec, *, check: bool = True) -> dict[str, Tensor]:
    """Return ``state`` with every hidden unit's scale normalized (Alg. 1).

    For each group in forward order with a ``scale`` symmetry, unit ``k``'s
    incoming weights and bias are divided by n_k, the L2 norm of its incoming
    weights, and its outgoing weights multiplied by n_k. In a group with
    several producers (a residual stream) n_k is the norm of the unit's
    effective rows in the producers that determine it
    (:func:`~canon.core.spec.forward_order`: those not downstream of the
    group itself), and one factor divides every producer's slice (DESIGN
    §3b). Counting every producer would ask for a fixed point that need not
    exist: the blocks' contributions scale with the stream's own factor. A unit followed by
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

    ``linear`` groups (attention's query/key and value/output dimensions,
    DESIGN §3b) are balanced last: unit k's producer slices are multiplied
    and its outgoing slices divided by sqrt(|out_k| / |in_k|), the norms of
    its weights on each side (biases, 1-D, follow but do not count), so
    that the two norms become equal.

    The eval-mode function is preserved up to the output layer's global
    positive factor (the argmax is unchanged), and ``normalize`` is
    idempotent. Units with all-zero incoming weights are left as they are.
    The input is not modified; untouched tensors are shared with it.
    ``check=False`` skips validating ``state`` against ``spec`` (for callers
    that already did).
    """
    return normalize_with_scales(state, spec, check=check)[0]


@dataclass(frozen=True)
class UnitScales:
    """The scales :func:`normalize` takes out of a network: for each group it normalizes
    (by name), the factor it divides each unit by (the norm of the unit's effective
    incoming weights, counted in forward order), and the output layer's Frobenius norm
    over sqrt(H^L) (``None`` without an output layer or with an all-zero one)."""

    groups: dict[str, Tensor]
    output: float | None

    def mean(self, other: UnitScales) -> UnitScales:
        """The arithmetic mean of two networks' scales, unit by unit (the two in one
        unit order, such as a network and another aligned to it)."""
        output = None
        if self.output is not None and other.output is not None:
            output = (self.output + other.output) / 2
        groups = {g: (s + other.groups[g].to(s.device)) / 2 for g, s in self.groups.items()}
        return UnitScales(groups, output)


def unit_scales(state: Mapping[str, Tensor], spec: Spec) -> UnitScales:
    """The scales :func:`normalize` takes out of ``state`` (see :class:`UnitScales`)."""
    return normalize_with_scales(state, spec)[1]


def rescale(state: Mapping[str, Tensor], spec: Spec, scales: UnitScales) -> dict[str, Tensor]:
    """A normalized network with ``scales`` put back: each recorded group's units
    multiplied by their factors (their producers' own scale; for ``scale`` groups their
    outgoing weights divided by them) and the output layer by ``scales.output``. The same
    function up to the output's positive factor; on ``normalize(w)`` with
    ``unit_scales(w)`` it undoes normalization's per-unit rescalings (not BatchNorm's
    input scale or sign, which it fixes too, nor attention's balancing). Trained from,
    such a network starts at the scale of the networks the scales came from (SGD's
    steps depend on it)."""
    check_state(state, spec, "`state`")
    out = _Copy(state)
    for group in spec.groups:
        factors = scales.groups.get(group.name)
        if factors is None:
            continue
        if factors.shape != (group.size,):
            raise SpecMismatchError(
                f"scales for group `{group.name}` have shape {tuple(factors.shape)}, "
                f"expected ({group.size},)"
            )
        for producer in group.producers:
            for name in producer.own_scale:
                out.scale(name, 0, factors)
        if group.symmetry == "scale":
            for axis in group.outgoing:
                out.scale(
                    axis.name, axis.axis, 1.0 / factors,
                    block=axis.block, repeat=axis.repeat, head=axis.head,
                )  # fmt: skip
    if spec.output is not None and scales.output is not None:
        layer = spec.output
        for tensor in (layer.weight, layer.bias):
            if tensor is not None:
                out[tensor] = out[tensor] * scales.output
    return dict(out)


def normalize_with_scales(
    state: Mapping[str, Tensor], spec: Spec, *, check: bool = True
) -> tuple[dict[str, Tensor], UnitScales]:
    """:func:`normalize` and :func:`unit_scales` of ``state`` from one pass."""
    if check:
        check_state(state, spec, "`state`")
    out = _Copy(state)
    done: set[str] = set()
    for group, determining in forward_order(spec):
        _normalize_group(out, group, determining, done)
    for group in spec.groups:  # producers that did not determine their group's scale
        for producer in group.producers:
            if producer.batchnorm is not None and producer.weight not in done:
                _normalize_batchnorm_input(out, producer)
    for group in spec.groups:  # last: every other factor on their tensors is in place
        if group.symmetry == "linear":
            _balance(out, group)
    output = None
    if spec.output is not None:
        layer = spec.output
        norm = torch.linalg.vector_norm(out[layer.weight])
        if float(norm) > 0:
            factor = math.sqrt(layer.size) / norm
            out[layer.weight] = out[layer.weight] * factor
            if layer.bias is not None:
                out[layer.bias] = out[layer.bias] * factor
            output = float(1 / factor)
    return dict(out), UnitScales(out.norms, output)


class _Copy(dict[str, Tensor]):
    """The network being normalized. A tensor is copied the first time one of its axes is
    scaled and scaled in place after that (``owned``): a wide layer that several groups
    touch (as producer of one, consumer of another) is copied once, not once per group."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        super().__init__(state)
        self.owned: set[str] = set()
        self.norms: dict[str, Tensor] = {}  # what each normalized group's units were divided by

    def scale(self, name: str, axis: int, factors: Tensor, **layout: int) -> None:
        """Multiply unit k's slice of tensor ``name`` along ``axis`` by ``factors[k]``
        (``layout``: the units' ``block``, ``start``, ``repeat`` and ``head``, as
        :func:`~canon.core.units.scale_units` takes them)."""
        owned = name in self.owned
        self[name] = scale_units(self[name], axis, factors, **layout, in_place=owned)
        self.owned.add(name)


def _safe(x: Tensor) -> Tensor:
    return torch.where(x > 0, x, torch.ones_like(x))


def _normalize_batchnorm_input(out: _Copy, producer: Producer) -> None:
    """BN's input scale is a symmetry whatever follows (w -> w / n, mean -> mean / n,
    var -> var / n^2, with gamma's eps correction: :func:`scale_batchnorm_input`), and so is
    (w, b, mean, gamma) -> -(...). Make |w_k| = 1 and gamma_k >= 0."""
    bn = producer.batchnorm
    assert bn is not None
    w = out[producer.weight]
    gamma = out[bn.weight]
    # where gamma is 0 the unit's output does not depend on w: fix the sign of w's sum
    key = torch.where(gamma != 0, gamma, w.reshape(w.shape[0], -1).sum(1).to(gamma.dtype))
    flip = torch.where(key < 0, -torch.ones_like(gamma), torch.ones_like(gamma))
    scale_batchnorm_input(out, producer, 1.0 / _safe(unit_norms(w)))
    out.owned.add(producer.weight)  # a new tensor now
    for name in (producer.weight, producer.bias, bn.running_mean, bn.weight):
        if name is not None:
            out.scale(name, 0, flip)


def _output_scale(out: Mapping[str, Tensor], producer: Producer) -> Tensor:
    """The norm of each unit's effective incoming weights in one producer (after its
    BatchNorm's input was normalized, the BN gain)."""
    gain = bn_gain(out, producer)
    return unit_norms(out[producer.weight]) if gain is None else gain


def _balance(out: _Copy, group: UnitGroup) -> None:
    """Make each unit's incoming and outgoing weight norms equal (a ``linear`` group)."""
    moving = [t for t in group.tensors if t.role != "carried"]
    n_in, n_out = (
        _slice_norms(out, group, [t for t in moving if (t.role == "incoming") == incoming])
        for incoming in (True, False)
    )
    factors = torch.where((n_in > 0) & (n_out > 0), (n_out / _safe(n_in)).sqrt(), 1.0)
    for t in moving:
        f = factors if t.role == "incoming" else 1.0 / factors
        out.scale(t.name, t.axis, f, block=t.block, start=t.start, repeat=t.repeat, head=t.head)


def _slice_norms(out: Mapping[str, Tensor], group: UnitGroup, tensors: list[TensorAxis]) -> Tensor:
    """Each unit's norm over its slices of the weights (not the 1-D biases) in ``tensors``."""
    total = torch.zeros(group.size, dtype=torch.float64)
    for t in tensors:
        if out[t.name].ndim > 1:
            rows = unit_slices(
                out[t.name], t.axis, group.size, t.block, t.start, repeat=t.repeat, head=t.head
            )
            total = total + rows.double().square().sum(1).cpu()
    return total.sqrt()


def _normalize_group(
    out: _Copy,
    group: UnitGroup,
    determining: tuple[Producer, ...],
    done: set[str],
) -> None:
    for producer in determining:
        if producer.batchnorm is not None:
            _normalize_batchnorm_input(out, producer)
        done.add(producer.weight)
    if not group.normalized:
        return  # e.g. tanh: not homogeneous, the unit keeps its scale
    scales = [_output_scale(out, p) for p in determining]
    # one factor per unit for all producers: the norm of the concatenated effective rows
    norms = _safe(scales[0] if len(scales) == 1 else torch.stack(scales).square().sum(0).sqrt())
    out.norms[group.name] = norms
    inverse = 1.0 / norms
    for producer in group.producers:
        for name in producer.own_scale:
            if producer.batchnorm is None:
                out.scale(name, 0, inverse)
            else:  # BN's affine is per unit already
                out[name] = out[name] / norms
    if group.symmetry == "scale":
        for axis in group.outgoing:
            out.scale(
                axis.name, axis.axis, norms, block=axis.block, repeat=axis.repeat, head=axis.head
            )

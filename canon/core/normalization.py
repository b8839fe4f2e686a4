"""Normalization (the paper's Alg. 1): fix every hidden unit's scale.

Pure function on state dicts; see DESIGN §3 "Normalization" for the contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Unpack

import torch
from torch import Tensor

from canon.core.host_reads import read
from canon.core.spec import (
    Layout,
    Producer,
    Spec,
    TensorAxis,
    UnitGroup,
    check_state,
    forward_order,
    layout_of,
)
from canon.core.units import (
    at_units,
    bn_gain,
    gather_units,
    producer_rows,
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
    its weights on each side (biases, 1-D, follow but do not count, except
    on a side without weights), so that the two norms become equal; a unit
    one side of which is all zero, biases included, computes nothing, and
    all its slices are set to zero.

    A unit whose effective incoming weights are zero in every producer
    outputs a constant, its effective bias (gamma_k / sqrt(var_k + eps) *
    (b_k - mean_k) + beta_k after BatchNorm): where the producers that
    determine its scale have zero weights, n_k is the norm of its effective
    biases instead; a ``sign`` group's constant unit is negated (with its
    outgoing weights) so that its first nonzero effective bias is positive;
    a ``scale`` or ``sign`` unit whose weights and biases are all zero
    outputs 0 (its activation is homogeneous or odd), and its outgoing
    weights are set to zero. A unit followed by BatchNorm whose weights are
    zero takes its BN input scale from the norm of (sqrt(var_k), b_k, mean_k)
    instead.

    The eval-mode function is preserved up to the output layer's global
    positive factor (the argmax is unchanged), and ``normalize`` is
    idempotent.
    The input is not modified; untouched tensors are shared with it.
    ``check=False`` skips validating ``state`` against ``spec`` (for callers
    that already did).
    """
    return normalize_with_scales(state, spec, check=check)[0]


@dataclass(frozen=True)
class UnitScales:
    """The scales :func:`normalize` takes out of a network: for each group it normalizes
    (by name), the factor it divides each unit by (the norm of the unit's effective
    incoming weights, counted in forward order; of its effective biases for a unit
    without such weights; 1 for a unit with neither), and the output layer's Frobenius
    norm over sqrt(H^L) (``None`` without an output layer or with an all-zero one)."""

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
    input scale or sign, which it fixes too, nor attention's balancing, nor the
    outgoing weights it sets to zero behind units that output 0). Trained from,
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
                out.scale(name, 0, factors, **producer.layout(name))
        if group.symmetry == "scale":
            for axis in group.outgoing:
                out.scale(axis.name, axis.axis, 1.0 / factors, **layout_of(axis))
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
        factor = math.sqrt(layer.size) / norm
        length, scale = read(torch.stack([norm, 1 / factor])).tolist()  # one read
        if length > 0:
            out[layer.weight] = out[layer.weight] * factor
            if layer.bias is not None:
                out[layer.bias] = out[layer.bias] * factor
            output = scale
    return dict(out), UnitScales(out.norms, output)


class _Copy(dict[str, Tensor]):
    """The network being normalized. A tensor is copied the first time one of its axes is
    scaled and scaled in place after that (``owned``): a wide layer that several groups
    touch (as producer of one, consumer of another) is copied once, not once per group."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        super().__init__(state)
        self.owned: set[str] = set()
        self.norms: dict[str, Tensor] = {}  # what each normalized group's units were divided by

    def scale(self, name: str, axis: int, factors: Tensor, **layout: Unpack[Layout]) -> None:
        """Multiply unit k's slice of tensor ``name`` along ``axis`` by ``factors[k]``
        (``layout``: where the units sit, as :func:`~canon.core.spec.layout_of` gives
        it)."""
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
    # every output of the layer alike, whichever of them the producer's units are
    producer = replace(producer, start=0, head=1, stride=0)
    w = out[producer.weight]
    gamma = out[bn.weight]
    # where gamma is 0 the unit's output does not depend on w: fix the sign of w's sum
    key = torch.where(gamma != 0, gamma, w.reshape(w.shape[0], -1).sum(1).to(gamma.dtype))
    flip = torch.where(key < 0, -torch.ones_like(gamma), torch.ones_like(gamma))
    norms = unit_norms(w).to(gamma.dtype)
    norms = torch.where(norms > 0, norms, _constant_input_scale(out, producer))
    scale_batchnorm_input(out, producer, 1.0 / _safe(norms))
    out.owned.add(producer.weight)  # a new tensor now
    for name in (producer.weight, producer.bias, bn.running_mean, bn.weight):
        if name is not None:
            out.scale(name, 0, flip)


def _constant_input_scale(out: Mapping[str, Tensor], producer: Producer) -> Tensor:
    """The scale of a BatchNorm input without weights (the constant b_k): the norm of
    (sqrt(var_k), b_k, mean_k), which the input-scale symmetry multiplies by c_k too."""
    bn = producer.batchnorm
    assert bn is not None
    squares = out[bn.running_var] + out[bn.running_mean].square()
    if producer.bias is not None:
        squares = squares + out[producer.bias].square()
    return squares.sqrt()


def _output_scale(out: Mapping[str, Tensor], producer: Producer, size: int) -> Tensor:
    """The norm of each of the ``size`` units' effective incoming weights in one producer
    (after its BatchNorm's input was normalized, the BN gain)."""
    gain = bn_gain(out, producer, size)
    return unit_norms(producer_rows(out, producer, False, size)) if gain is None else gain


def _balance(out: _Copy, group: UnitGroup) -> None:
    """Make each unit's incoming and outgoing weight norms equal (a ``linear`` group).

    A side without weights is measured by its biases. A unit one side of which is zero,
    weights and biases, contributes nothing whatever the other side holds (q_d k_d = 0,
    or a value dimension that the output projection does not read, or that is 0): all
    its slices are set to zero."""
    moving = [t for t in group.tensors if t.role != "carried"]
    n_in, n_out = (
        _side_norms(out, group, [t for t in moving if (t.role == "incoming") == incoming])
        for incoming in (True, False)
    )
    live = (n_in > 0) & (n_out > 0)
    factors = torch.where(live, (n_out / _safe(n_in)).sqrt(), 0.0)
    for t in moving:
        f = factors if t.role == "incoming" else torch.where(live, 1.0 / _safe(factors), 0.0)
        out.scale(t.name, t.axis, f, **layout_of(t))


def _side_norms(out: Mapping[str, Tensor], group: UnitGroup, tensors: list[TensorAxis]) -> Tensor:
    """Each unit's norm over its slices of the weights in ``tensors``, or, where those are
    all zero, of the biases (1-D)."""
    weights = _slice_norms(out, group, [t for t in tensors if out[t.name].ndim > 1])
    biases = _slice_norms(out, group, [t for t in tensors if out[t.name].ndim == 1])
    return torch.where(weights > 0, weights, biases)


def _slice_norms(out: Mapping[str, Tensor], group: UnitGroup, tensors: list[TensorAxis]) -> Tensor:
    """Each unit's norm over its slices of ``tensors``."""
    total = torch.zeros(group.size, dtype=torch.float64)
    for t in tensors:
        rows = unit_slices(out[t.name], t.axis, group.size, **layout_of(t))
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
    weightless = True  # whether some unit may have no effective incoming weights
    if group.normalized:  # not e.g. tanh: not homogeneous, the unit keeps its scale
        weightless = _rescale_units(out, group, determining)
    if weightless and group.symmetry in ("scale", "sign"):
        _settle_constant_units(out, group)


def _rescale_units(out: _Copy, group: UnitGroup, determining: tuple[Producer, ...]) -> bool:
    """Divide each unit's output scale by n_k, compensated in its outgoing weights
    (``scale`` groups only); whether some unit had no weights in ``determining``."""
    scales = [_output_scale(out, p, group.size) for p in determining]
    # one factor per unit for all producers: the norm of the concatenated effective rows
    norms = scales[0] if len(scales) == 1 else torch.stack(scales).square().sum(0).sqrt()
    weightless = not bool(read((norms > 0).all()))
    if weightless:  # such a unit's scale is that of its constant output
        offsets = torch.linalg.vector_norm(_offsets(out, group), dim=1)
        norms = torch.where(norms > 0, norms, offsets.to(norms))
    norms = _safe(norms)
    out.norms[group.name] = norms
    inverse = 1.0 / norms
    for producer in group.producers:
        for name in producer.own_scale:  # BN's affine is laid out as the producer's rows
            out.scale(name, 0, inverse, **producer.layout(name))
    if group.symmetry == "scale":
        _scale_outgoing(out, group, norms)
    return weightless


def _scale_outgoing(out: _Copy, group: UnitGroup, factors: Tensor) -> None:
    """Multiply each unit's slices of the consuming layers' weights by ``factors``."""
    for axis in group.outgoing:
        out.scale(axis.name, axis.axis, factors, **layout_of(axis))


def _settle_constant_units(out: _Copy, group: UnitGroup) -> None:
    """Fix what is left free in the units whose effective incoming weights are zero in
    every producer (a constant output): a ``sign`` unit's sign (its first nonzero
    effective bias made positive), and a unit that outputs 0 has its outgoing weights
    set to zero (its activation maps 0 to 0), so that both are the same in every
    network of the symmetry class."""
    constant = _incoming_norms(out, group) == 0
    if not bool(constant.any()):
        return
    offsets = _offsets(out, group)
    factors = torch.ones(group.size, dtype=offsets.dtype)
    if group.symmetry == "sign":
        factors = torch.where(constant, _leading_signs(offsets), factors)
        for producer in group.producers:
            for name in producer.odd:
                out.scale(name, 0, factors, **producer.layout(name))
    silent = constant & (offsets == 0).all(dim=1)
    if bool(silent.any()) or group.symmetry == "sign":
        _scale_outgoing(out, group, torch.where(silent, torch.zeros_like(factors), factors))


def _incoming_norms(out: Mapping[str, Tensor], group: UnitGroup) -> Tensor:
    """Each unit's effective incoming norm over every producer of the group (float64, on
    the CPU)."""
    total = torch.zeros(group.size, dtype=torch.float64)
    for p in group.producers:
        norms = unit_norms(producer_rows(out, p, effective=False, size=group.size))
        gain = bn_gain(out, p, group.size)
        total = total + (norms if gain is None else norms * gain.abs()).double().square().cpu()
    return total.sqrt()


def _offsets(out: Mapping[str, Tensor], group: UnitGroup) -> Tensor:
    """Each unit's effective bias in every producer, ``[size, producers]`` (float64, on
    the CPU): what the producer adds to the unit whatever its input, after its BatchNorm
    gamma / sqrt(var + eps) * (b - mean) + beta."""
    columns = []
    for p in group.producers:
        bias = torch.zeros(group.size, dtype=torch.float64, device=out[p.weight].device)
        if p.bias is not None:
            rows = gather_units(out[p.bias], 0, group.size, **p.layout(p.bias))
            bias = bias + rows.view(-1).double()
        gain = bn_gain(out, p, group.size)
        if gain is not None:
            assert p.batchnorm is not None
            mean, beta = (
                at_units(out[n], p, group.size)
                for n in (p.batchnorm.running_mean, p.batchnorm.bias)
            )
            bias = gain.double() * (bias - mean.double()) + beta.double()
        columns.append(bias.cpu())
    return torch.stack(columns, dim=1)


def _leading_signs(rows: Tensor) -> Tensor:
    """The sign of each row's first nonzero entry (1 for a zero row)."""
    first = (rows != 0).to(torch.int8).argmax(dim=1, keepdim=True)
    leading = rows.gather(1, first).squeeze(1)
    return torch.where(leading < 0, -torch.ones_like(leading), torch.ones_like(leading))

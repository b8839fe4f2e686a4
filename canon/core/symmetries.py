"""Random elements of a network's symmetry group.

``random_symmetry`` returns a copy of a network that computes the same
function (exactly, or up to BatchNorm's eps term) but whose parameters look
unrelated: hidden units permuted, rescaled, and sign-flipped where the
activations allow it. It is how canon shows (in its demo and its tests) that
canonical forms remove the symmetries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from canon.core.spec import Producer, Spec, UnitGroup, layout_of
from canon.core.units import permute_units, scale_batchnorm_input, scale_units

__all__ = ["random_permutation", "random_symmetry"]


def random_symmetry(
    state: Mapping[str, Tensor],
    spec: Spec,
    seed: int = 0,
    *,
    max_scale: float = 4.0,
    bn_input_scale: bool = True,
) -> dict[str, Tensor]:
    """Apply a random function-preserving transformation to ``state``.

    Every group's units are permuted (within blocks where the group has
    them), with every tensor that moves with them. ``scale`` groups are rescaled per unit by
    factors in [1/max_scale, max_scale] with compensation in the outgoing
    weights (after BatchNorm: gamma and beta are rescaled); scale-invariant
    groups have their incoming weights rescaled with no compensation;
    ``sign`` groups have random units negated along with their outgoing
    weights; ``linear`` groups (attention) are multiplied by random factors of
    either sign, their outgoing weights divided by them. Groups in heads have
    their blocks permuted (one order for all the groups of a link) and their
    units within each block. A shared group (a residual stream) gets one factor, sign and
    permutation per unit for all its producers. Units followed by BatchNorm
    also get the two BN symmetries: the input scale (w, b, mean times c, var
    times c^2, gamma corrected for eps so that it is exact; skip it with
    ``bn_input_scale=False``) and the sign of gamma (w, b, mean, gamma
    negated: exact). The output layer is
    scaled by one positive factor.
    """
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    head_orders: dict[str, Tensor] = {}  # one order of the blocks per link (attention layer)
    for group in spec.groups:
        if group.heads > 1 and group.link not in head_orders:
            head_orders[group.link] = torch.randperm(group.heads, generator=gen)
        _transform_group(out, group, gen, max_scale, bn_input_scale, head_orders.get(group.link))
    if spec.output is not None:
        factor = _factors(1, gen, max_scale)[0]
        out[spec.output.weight] = out[spec.output.weight] * factor
        if spec.output.bias is not None:
            out[spec.output.bias] = out[spec.output.bias] * factor
    return out


def _factors(n: int, gen: torch.Generator, max_scale: float) -> Tensor:
    log = math.log(max_scale)
    return torch.exp((torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * log)


def _signs(n: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1


def random_permutation(
    n: int,
    blocks: int,
    gen: torch.Generator,
    order: Tensor | None = None,
    whole: bool = False,
) -> Tensor:
    """A random permutation of ``n`` units that keeps each of ``blocks`` contiguous blocks,
    or, given the ``order`` of the blocks (heads), moves block ``order[a]`` to block a
    and permutes the units within it (not with ``whole``: the blocks move as they are)."""
    if order is not None:
        m = n // len(order)
        return torch.cat(
            [
                int(b) * m + (torch.arange(m) if whole else torch.randperm(m, generator=gen))
                for b in order
            ]
        )
    if blocks == 1:
        return torch.randperm(n, generator=gen)
    m = n // blocks
    return torch.cat([b * m + torch.randperm(m, generator=gen) for b in range(blocks)])


def _transform_group(
    out: dict[str, Tensor],
    group: UnitGroup,
    gen: torch.Generator,
    max_scale: float,
    bn_input_scale: bool,
    order: Tensor | None,
) -> None:
    n = group.size

    def scale_incoming(names: Sequence[str | None], factors: Tensor, producer: Producer) -> None:
        # a part of a fused layer's rows is laid out as the producer says (no BatchNorm)
        for name in names:
            if name is not None:
                out[name] = scale_units(out[name], 0, factors, **producer.layout(name))

    def scale_outgoing(factors: Tensor) -> None:
        for axis in group.outgoing:
            out[axis.name] = scale_units(out[axis.name], axis.axis, factors, **layout_of(axis))

    for producer in group.producers:
        bn = producer.batchnorm
        if bn is not None:
            if bn_input_scale:
                scale_batchnorm_input(out, producer, _factors(n, gen, max_scale))
            flip = _signs(n, gen)
            names = [producer.weight, producer.bias, bn.running_mean, bn.weight]
            scale_incoming(names, flip, producer)
    # the units' own scale: the BN output after BatchNorm, the pre-activation without
    if group.normalized:
        a = _factors(n, gen, max_scale)
        for producer in group.producers:
            scale_incoming(producer.own_scale, a, producer)
        if group.symmetry == "scale":
            scale_outgoing(1.0 / a)
    if group.symmetry == "sign":
        s = _signs(n, gen)
        for producer in group.producers:
            scale_incoming(producer.odd, s, producer)
        scale_outgoing(s)
    if group.symmetry == "linear":
        c = _factors(n, gen, max_scale) * _signs(n, gen)
        for t in group.tensors:
            if t.role == "incoming":
                out[t.name] = scale_units(out[t.name], 0, c, **layout_of(t))
        scale_outgoing(1.0 / c)
    perm = random_permutation(n, group.blocks, gen, order, group.heads_only)
    for t in group.tensors:
        device = out[t.name].device
        out[t.name] = permute_units(out[t.name], t.axis, perm.to(device), **layout_of(t))

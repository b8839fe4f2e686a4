"""Weight matching's fast path (laid-out tensors, kept products) against the plain computation.

:func:`canon.core.match_weights` lays every tensor out once and keeps each tensor's
product for a group until a permutation of another of its axes changes. Here a
straightforward coordinate descent (every step moves every tensor with ``moved`` and
takes every product afresh) must find the very same alignment on random hand-written
specs: shared groups, ``sign`` and ``none`` symmetries, flattened (``block`` > 1) and
4-d outgoing axes, carried tensors, GroupNorm-like blocks and tensors whose two axes
belong to one group.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from canon.core import Alignment, Spec, layer_weights, match_weights
from canon.core.permutations import UnitAxis, moved, solve_assignment, unit_axes
from canon.core.spec import (
    CarriedAxis,
    OutgoingAxis,
    OutputLayer,
    Producer,
    Symmetry,
    UnitGroup,
)

INPUTS = 3


@st.composite
def specs(draw: st.DrawFn) -> tuple[Spec, dict[str, tuple[int, ...]]]:
    """A random spec and the shape of every tensor it names."""
    count = draw(st.integers(1, 4))
    symmetries: list[Symmetry] = ["scale", "sign", "none"]
    sizes = [draw(st.integers(2, 6)) for _ in range(count)]
    shapes: dict[str, tuple[int, ...]] = {}
    producers: list[list[Producer]] = [[] for _ in range(count)]
    outgoing: list[list[OutgoingAxis]] = [[] for _ in range(count)]
    carried: list[list[CarriedAxis]] = [[] for _ in range(count)]

    def layer(name: str, out: int, source: int | None) -> None:
        """A weight producing ``out`` units from the input or from group ``source``."""
        block = draw(st.sampled_from([1, 2])) if source is not None else 1
        fan_in = INPUTS if source is None else sizes[source] * block
        kernel = draw(st.sampled_from([(), (2, 1)])) if block == 1 else ()
        shapes[f"{name}.weight"] = (out, fan_in, *kernel)
        if source is not None:
            outgoing[source].append(OutgoingAxis(f"{name}.weight", 1, block))

    for i in range(count):
        for p in range(draw(st.integers(1, 3))):  # several producers: a shared group
            name = f"g{i}.p{p}"
            # any group may be read, this one and later ones included (a hand-written spec)
            layer(name, sizes[i], draw(st.none() | st.integers(0, count - 1)))
            bias = draw(st.booleans())
            if bias:
                shapes[f"{name}.bias"] = (sizes[i],)
            producers[i].append(Producer(f"{name}.weight", f"{name}.bias" if bias else None))
        if draw(st.booleans()):
            shapes[f"g{i}.norm"] = (sizes[i],)
            carried[i].append(CarriedAxis(f"g{i}.norm"))
    layer("head", 2, draw(st.integers(0, count - 1)))
    groups = tuple(
        UnitGroup(
            name=f"g{i}",
            size=sizes[i],
            symmetry=draw(st.sampled_from(symmetries)),
            producers=tuple(producers[i]),
            outgoing=tuple(outgoing[i]),
            carried=tuple(carried[i]),
            blocks=draw(st.sampled_from([1, 2])) if sizes[i] % 2 == 0 else 1,
        )
        for i in range(count)
    )
    return Spec(groups, OutputLayer("head.weight", None, 2)), shapes


def _random_state(
    shapes: Mapping[str, tuple[int, ...]], seed: int, dtype: torch.dtype
) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen, dtype=dtype) for name, shape in shapes.items()}


def _random_alignment(spec: Spec, seed: int) -> Alignment:
    gen = torch.Generator().manual_seed(seed)
    perms = {}
    for g in spec.groups:
        m = g.size // g.blocks  # a permutation within each block
        perms[g.name] = torch.cat(
            [torch.randperm(m, generator=gen) + b * m for b in range(g.blocks)]
        )
    signs = {
        g.name: torch.where(torch.rand(g.size, generator=gen) < 0.5, -1.0, 1.0)
        for g in spec.groups
        if g.symmetry == "sign"
    }
    return Alignment(perms, signs)


def _plain_weight_matching(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    init: Alignment,
    seed: int,
) -> Alignment:
    """Weight matching as DESIGN §3b states it, every product taken afresh each step."""
    axes = unit_axes(spec)
    touching: dict[str, list[tuple[str, UnitAxis]]] = {g.name: [] for g in spec.groups}
    names = sorted(n for n in axes if state[n].is_floating_point())
    weights = layer_weights(state, reference, names)
    for name in names:
        for axis in axes[name]:
            touching[axis.group].append((name, axis))
    neighbours = {
        g: {a.group for name, _ in found for a in axes[name]} for g, found in touching.items()
    }
    perms, signs = dict(init.permutations), dict(init.signs)
    eps = torch.finfo(next(iter(state.values())).dtype).eps
    gen = torch.Generator().manual_seed(seed)
    stale = {g.name for g in spec.groups}
    for _ in range(100):
        if not stale:
            break
        for index in torch.randperm(len(spec.groups), generator=gen).tolist():
            group = spec.groups[index]
            if group.name not in stale:
                continue
            stale.discard(group.name)
            n = group.size
            even = torch.zeros(n, n, dtype=torch.float64)
            odd = torch.zeros(n, n, dtype=torch.float64)
            for name, axis in touching[group.name]:
                ref = reference[name].movedim(axis.axis, 0).reshape(n, -1) * weights[name]
                other = moved(state[name], axes[name], Alignment(perms, signs), axis)
                other = other.movedim(axis.axis, 0).reshape(n, -1)
                product = (ref @ other.T).double()
                if axis.signed:
                    odd += product
                else:
                    even += product
            signed = group.symmetry == "sign"
            perm = solve_assignment(even + odd.abs() if signed else even + odd, group.blocks)
            rows = torch.arange(n)
            sign = torch.where(odd[rows, perm] < 0, -1.0, 1.0).double() if signed else None
            new = _total(even, odd, perm, sign)
            old = _total(
                even, odd, perms[group.name], signs[group.name].double() if signed else None
            )
            if new <= old + 64 * eps * max(1.0, abs(old)):
                continue
            perms[group.name] = perm
            if sign is not None:
                signs[group.name] = sign.float()
            stale |= neighbours[group.name] - {group.name}
    return Alignment(perms, signs)


def _total(even: Tensor, odd: Tensor, perm: Tensor, sign: Tensor | None) -> float:
    rows = torch.arange(len(perm))
    gain = odd[rows, perm] if sign is None else odd[rows, perm] * sign
    return float((even[rows, perm] + gain).sum())


@settings(deadline=None)
@given(
    drawn=specs(),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_weight_matching_equals_the_plain_computation(
    drawn: tuple[Spec, dict[str, tuple[int, ...]]], seed: int, dtype: torch.dtype
) -> None:
    spec, shapes = drawn
    reference = _random_state(shapes, seed, dtype)
    state = _random_state(shapes, seed + 1, dtype)
    init = _random_alignment(spec, seed + 2)
    fast = match_weights(state, reference, spec, init=init, seed=seed)
    plain = _plain_weight_matching(state, reference, spec, init, seed)
    for group in spec.groups:
        assert torch.equal(fast.permutations[group.name], plain.permutations[group.name])
        if group.symmetry == "sign":
            assert torch.equal(fast.signs[group.name], plain.signs[group.name])

"""Matching methods: which unit of one network corresponds to which of another.

Both networks are *normalized* (their per-unit scales fixed), so matching
compares directions only. Two methods need nothing but the weights:

- ``incoming``: the paper's Alg. 2. Groups in forward order; each group's
  units are matched by the cosine of their incoming vectors (the
  concatenation of their rows in every producer whose inputs are already
  aligned), one linear assignment per group.
- ``weight``: weight matching (DESIGN §3b). Coordinate descent over groups,
  each step a linear assignment on the sum, over every parameter axis the
  group touches (incoming, outgoing and carried), of the inner products of
  the two networks' slices with every other group's current permutation
  applied; started from the ``incoming`` solution, repeated until a whole
  sweep changes no permutation. Each step can only raise the objective
  (:func:`matching_objective`), so it ends.

``activation`` matching needs the model and data and lives in the engine.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from canon.core.permutations import (
    Alignment,
    UnitAxis,
    identity_alignment,
    moved,
    solve_assignment,
    unit_axes,
)
from canon.core.spec import Spec, UnitGroup, forward_order
from canon.core.units import producer_rows
from canon.errors import ConfigError

__all__ = [
    "WEIGHT_METHODS",
    "default_method",
    "match",
    "match_incoming",
    "match_weights",
    "matching_objective",
]

WEIGHT_METHODS = ("incoming", "weight")
"""The matching methods that need only the two networks' weights."""

MAX_SWEEPS = 100


def default_method(spec: Spec) -> str:
    """``incoming`` for networks without shared groups (the paper's), else ``weight``."""
    return "weight" if spec.shared else "incoming"


def match(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    method: str = "auto",
    *,
    record: dict[str, Tensor] | None = None,
    seed: int = 0,
) -> Alignment:
    """The alignment of normalized ``state`` to normalized ``reference`` by ``method``.

    ``auto`` is :func:`default_method`. With ``record`` (``incoming`` only),
    each group's similarity matrix as handed to the assignment solver is
    stored there under the group's name.
    """
    if method == "auto":
        method = default_method(spec)
    if method == "incoming":
        return match_incoming(state, reference, spec, record=record)
    if method == "weight":
        return match_weights(state, reference, spec, seed=seed)
    raise ConfigError(
        f"unknown matching method `{method}` for weights alone; "
        f"choose one of: {', '.join(WEIGHT_METHODS)} (activation matching needs data)"
    )


def match_incoming(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    *,
    record: dict[str, Tensor] | None = None,
) -> Alignment:
    """Alg. 2 on two *normalized* networks: the alignment of ``state`` to ``reference``.

    For each group in forward order, C[k, j] is the cosine between reference
    unit k and unit j of ``state`` (incoming effective weights, after the
    previous groups' permutations and signs were applied to the input axis);
    the permutation maximizes the sum of C (of |C| for ``sign`` groups, whose
    units then take the sign of their matched cosine). The groups and the
    producers that count come from :func:`~canon.core.spec.forward_order`
    (in a residual stream, the stem first).
    """
    axes = unit_axes(spec)
    current = identity_alignment(spec)
    perms = dict(current.permutations)
    signs = dict(current.signs)
    for group, ready in forward_order(spec):
        alignment = Alignment(perms, signs)
        view = ChainMap(
            {
                p.weight: moved(
                    state[p.weight], axes[p.weight], alignment, _own(axes, p.weight, group)
                )
                for p in ready
            },
            dict(state),
        )
        ref_units = F.normalize(
            torch.cat([producer_rows(reference, p, True) for p in ready], 1), dim=1
        )
        units = F.normalize(torch.cat([producer_rows(view, p, True) for p in ready], 1), dim=1)
        cosine = ref_units @ units.T
        similarity = cosine.abs() if group.symmetry == "sign" else cosine
        if record is not None:
            record[group.name] = similarity
        perm = solve_assignment(similarity, group.blocks)
        if group.symmetry == "sign":
            matched = cosine.gather(1, perm.unsqueeze(1)).squeeze(1)
            signs[group.name] = torch.where(matched < 0, -1.0, 1.0).to(cosine.dtype)
        perms[group.name] = perm
    return Alignment(perms, signs)


def _own(axes: dict[str, tuple[UnitAxis, ...]], name: str, group: UnitGroup) -> UnitAxis | None:
    """The axis by which tensor ``name`` carries ``group`` as a producer (axis 0)."""
    return next((a for a in axes[name] if a.group == group.name and a.axis == 0), None)


def _objective_names(spec: Spec, state: Mapping[str, Tensor]) -> set[str]:
    """The tensors weight matching compares: parameters (not running statistics)."""
    names = (
        set(spec.parameters)
        if spec.tensors
        else {n for n, t in state.items() if t.is_floating_point()}
    )
    return {n for n in unit_axes(spec) if n in names}


def _slices(t: Tensor, axis: UnitAxis, units: int) -> Tensor:
    """``t`` as one row per unit along ``axis`` (a unit's block of columns together)."""
    front = t.movedim(axis.axis, 0)
    return front.reshape(units, -1)


def matching_objective(
    state: Mapping[str, Tensor], reference: Mapping[str, Tensor], spec: Spec, alignment: Alignment
) -> float:
    """Sum over the matched parameters of <reference, state moved by ``alignment``>."""
    axes = unit_axes(spec)
    total = 0.0
    for name in sorted(_objective_names(spec, state)):
        a = reference[name].double()
        b = moved(state[name], axes[name], alignment).double()
        total += float((a * b).sum())
    return total


def match_weights(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    *,
    init: Alignment | None = None,
    seed: int = 0,
    max_sweeps: int = MAX_SWEEPS,
) -> Alignment:
    """Weight matching of normalized ``state`` to normalized ``reference`` (module docstring).

    Starts from ``init`` (default: the ``incoming`` solution); visits the
    groups in a seeded random order each sweep, skipping those none of whose
    neighbours (groups sharing a tensor) changed since their last step, which
    would only repeat it; stops when a sweep changes nothing or after
    ``max_sweeps``. The products are taken in the networks' dtype and summed
    in float64.
    """
    axes = unit_axes(spec)
    names = _objective_names(spec, state)
    by_group: dict[str, list[tuple[str, UnitAxis]]] = {g.name: [] for g in spec.groups}
    for name in sorted(names):
        for axis in axes[name]:
            by_group[axis.group].append((name, axis))
    start = init or match_incoming(state, reference, spec)
    perms = dict(start.permutations)
    signs = dict(start.signs)
    neighbours = {
        g.name: {a.group for name, _ in by_group[g.name] for a in axes[name]} for g in spec.groups
    }
    dtype = next(iter(state.values())).dtype
    eps = torch.finfo(dtype if dtype.is_floating_point else torch.float32).eps
    gen = torch.Generator().manual_seed(seed)
    groups = list(spec.groups)
    # a group whose neighbours kept their permutations since its last step would repeat it
    stale = {g.name for g in groups}
    for _ in range(max_sweeps):
        if not stale:
            break
        for index in torch.randperm(len(groups), generator=gen).tolist():
            group = groups[index]
            if group.name not in stale:
                continue
            stale.discard(group.name)
            even, odd = _step_terms(
                state, reference, axes, by_group[group.name], group.size, Alignment(perms, signs)
            )
            signed = group.symmetry == "sign"
            perm = solve_assignment(even + odd.abs() if signed else even + odd, group.blocks)
            rows = torch.arange(group.size)
            sign = torch.where(odd[rows, perm] < 0, -1.0, 1.0).double() if signed else None
            old_perm = perms[group.name].cpu()
            old_sign = signs[group.name].cpu().double() if signed else None
            new = _value(even, odd, perm, sign)
            old = _value(even, odd, old_perm, old_sign)
            # only a clear gain counts: ties keep the current solution, so the sweeps end
            if new <= old + 64 * eps * max(1.0, abs(old)):
                continue
            perms[group.name] = perm
            if sign is not None:
                signs[group.name] = sign.float()
            stale |= neighbours[group.name] - {group.name}
    return Alignment(perms, signs)


def _step_terms(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    axes: dict[str, tuple[UnitAxis, ...]],
    touching: list[tuple[str, UnitAxis]],
    units: int,
    alignment: Alignment,
) -> tuple[Tensor, Tensor]:
    """S[k, j] = sum of <reference unit k's slice, state unit j's slice> over the tensors
    touching a group, every other axis moved by ``alignment``; split into the terms a
    sign flip of unit j negates (``odd``) and the others (``even``)."""
    even = torch.zeros(units, units, dtype=torch.float64)
    odd = torch.zeros(units, units, dtype=torch.float64)
    for name, axis in touching:
        ref = _slices(reference[name], axis, units)
        other = _slices(moved(state[name], axes[name], alignment, axis), axis, units)
        product = (ref @ other.T.to(ref.dtype)).double().cpu()
        if axis.signed:
            odd += product
        else:
            even += product
    return even, odd


def _value(even: Tensor, odd: Tensor, perm: Tensor, sign: Tensor | None) -> float:
    rows = torch.arange(even.shape[0])
    gain = odd[rows, perm] if sign is None else odd[rows, perm] * sign
    return float((even[rows, perm] + gain).sum())

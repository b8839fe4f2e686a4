"""Matching methods as the engine runs them, activation matching among them (DESIGN §3b).

:func:`find_alignment` is the one entry point: it resolves ``auto`` to the
architecture's default (:func:`~canon.core.default_method`) and calls the
registered method (:mod:`canon.engine.kinds`). ``incoming`` and ``weight``
need only the two normalized networks; ``activation`` also runs both on a
seeded batch of training inputs and pairs units by the correlation of their
activations at the points of the traced graph where each group's units are
read (the spec's taps).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from canon.core import (
    Alignment,
    Spec,
    UnitGroup,
    default_method,
    match_incoming,
    match_weights,
)
from canon.core.lazy_similarity import RowProducts, magnitude, matched
from canon.core.spec import Tap, layout_of, linked
from canon.core.ties import assign_settled
from canon.core.trace import activations, load_into
from canon.core.units import unit_positions, unit_slices
from canon.engine.evaluate import reads_tokens
from canon.engine.kinds import get_matching
from canon.engine.options import MATCH_BATCH
from canon.errors import ConfigError

__all__ = [
    "MatchInputs",
    "by_activation",
    "by_incoming",
    "by_weight",
    "find_alignment",
    "match_activations",
    "resolve_method",
]


@dataclass(frozen=True, eq=False)
class MatchInputs:
    """What a matching method gets: the two *normalized* networks (``state`` is aligned
    to ``reference``), their spec, and for methods that need data the model template,
    the training inputs, the batch size and the seed that draws the batch."""

    state: Mapping[str, Tensor]
    reference: Mapping[str, Tensor]
    spec: Spec
    model: nn.Module | None = None
    inputs: Tensor | None = None
    batch: int = MATCH_BATCH
    seed: int = 0


def resolve_method(method: str, spec: Spec) -> str:
    """``method``, or for ``auto`` the architecture's default; unknown names are an error."""
    name = default_method(spec) if method == "auto" else method
    get_matching(name)
    return name


def find_alignment(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    method: str = "auto",
    *,
    model: nn.Module | None = None,
    inputs: Tensor | None = None,
    batch: int = MATCH_BATCH,
    seed: int = 0,
) -> Alignment:
    """The alignment of normalized ``state`` to normalized ``reference`` by ``method``."""
    info = get_matching(resolve_method(method, spec))
    if info.needs_data and (model is None or inputs is None):
        raise ConfigError(f"`{info.name}` matching needs the model and a dataset")
    return info.match(MatchInputs(state, reference, spec, model, inputs, batch, seed))


def by_incoming(inputs: MatchInputs) -> Alignment:
    """The paper's Alg. 2 (:func:`canon.core.matching.match_incoming`)."""
    return match_incoming(inputs.state, inputs.reference, inputs.spec)


def by_weight(inputs: MatchInputs) -> Alignment:
    """Weight matching (:func:`canon.core.match_weights`)."""
    return match_weights(inputs.state, inputs.reference, inputs.spec, seed=inputs.seed)


def by_activation(inputs: MatchInputs) -> Alignment:
    """Activation matching (:func:`match_activations`)."""
    assert inputs.model is not None and inputs.inputs is not None
    return match_activations(
        inputs.state,
        inputs.reference,
        inputs.spec,
        inputs.model,
        inputs.inputs,
        batch=inputs.batch,
        seed=inputs.seed,
    )


def _activations(
    template: nn.Module, state: Mapping[str, Tensor], x: Tensor, wanted: set[str]
) -> dict[str, Tensor]:
    model = copy.deepcopy(template).to(x.device)
    load_into(model, state)
    # token ids, which datasets hold as numbers, go in as integers (as evaluation feeds them)
    return activations(model, x.long() if reads_tokens(model) else x, wanted)


def match_activations(
    state: Mapping[str, Tensor],
    reference: Mapping[str, Tensor],
    spec: Spec,
    model: nn.Module,
    inputs: Tensor,
    *,
    batch: int = MATCH_BATCH,
    seed: int = 0,
) -> Alignment:
    """Pair units by the correlation of their activations on a seeded batch of ``inputs``.

    Both networks run on the same ``batch`` inputs (drawn with ``seed``); for
    each group, every point where its units are read contributes every
    sample and position. C[k, j] is the Pearson correlation of reference
    unit k and unit j of ``state``; the permutation maximizes the sum of C
    (of |C| for ``sign`` and ``linear`` groups, whose units take the sign of
    their matched correlation), within blocks where the group has them. Each
    group is matched on its own, except one attention layer's groups, whose
    heads are matched as blocks together.
    """
    if batch < 1:
        raise ConfigError(f"activation matching needs a batch of at least 1, got {batch}")
    gen = torch.Generator().manual_seed(seed)
    pick = torch.randperm(inputs.shape[0], generator=gen)[:batch]
    x = inputs[pick.to(inputs.device)]
    wanted = {tap.node for g in spec.groups for tap in g.taps}
    seen_ref = _activations(model, reference, x, wanted)
    seen = _activations(model, state, x, wanted)
    perms: dict[str, Tensor] = {}
    signs: dict[str, Tensor] = {}
    for group in spec.groups:
        if group.name in perms:
            continue
        mates = linked(spec, group)  # one attention layer's groups: heads as blocks
        correlations = [_correlation(g, (reference, seen_ref), (state, seen)) for g in mates]
        similarities = [
            magnitude(c) if g.signed else c for g, c in zip(mates, correlations, strict=True)
        ]
        found = assign_settled(mates, similarities, state, reference)
        for g, perm, corr in zip(mates, found, correlations, strict=True):
            perms[g.name] = perm.cpu()
            if g.signed:
                signs[g.name] = torch.where(matched(corr, perm).cpu() < 0, -1.0, 1.0)
    return Alignment(perms, signs)


def _correlation(
    group: UnitGroup,
    reference: tuple[Mapping[str, Tensor], Mapping[str, Tensor]],
    state: tuple[Mapping[str, Tensor], Mapping[str, Tensor]],
) -> RowProducts:
    """C[k, j]: the Pearson correlation of reference unit k and unit j of the state,
    over every sample and position of every point where the group's units are read
    (the cosine of the two units' centered activations), a block at a time.
    ``reference`` and ``state`` are each (weights, activations at the taps)."""
    if not group.taps:
        raise ConfigError(f"group `{group.name}` has no activations to match on")
    rows_ref, rows = (
        torch.cat([_tapped(group, tap, *net) for tap in group.taps], 1).double()
        for net in (reference, state)
    )
    return RowProducts.cosines(_centered(rows_ref), _centered(rows))


def _tapped(
    group: UnitGroup, tap: Tap, weights: Mapping[str, Tensor], seen: Mapping[str, Tensor]
) -> Tensor:
    """The group's units at ``tap`` as one row per unit."""
    out = seen[tap.node]
    if not tap.projection:
        return unit_slices(out, tap.axis, group.size, **layout_of(tap))
    at = unit_positions(group.size, head=tap.head, stride=tap.stride, device=out.device)
    rows = tap.start + at.flatten()
    bias = weights[tap.projection_bias][rows] if tap.projection_bias else None
    projected = F.linear(out, weights[tap.projection][rows].to(out.dtype), bias)
    return unit_slices(projected, -1, group.size)


def _centered(rows: Tensor) -> Tensor:
    return rows - rows.mean(dim=1, keepdim=True)

"""Units whose incoming scale is zero: canonical forms stay unique and keep the function.

A unit with all-zero incoming weights (a pruned unit) outputs a constant, its bias;
after BatchNorm, gamma = 0 (or zero weights) leaves a constant too. Rescaling that
constant with compensation in the outgoing weights (or, for odd activations, negating
it) is still an exact symmetry, and a unit whose constant is 0 may have any outgoing
weights. Normalization fixes all of these, so a network and any of its symmetric
copies have one canonical form, at geodesic distance 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import assert_same_function, assert_states_close, inputs, outputs, randomize, state_of
from torch import Tensor, nn

from canon.architectures import build_model
from canon.core import (
    Spec,
    UnitGroup,
    apply_alignment,
    canonicalize,
    normalize,
    random_symmetry,
    spec_from_module,
)
from canon.core.geometry import distances
from canon.engine.matching import match_activations

seeds = st.integers(0, 2**31 - 1)
# at least 3 units: a layer after a 2-unit layer with a degenerate unit has effective fan-in
# 1, where every pair of units has |cosine| 1 and matching is ambiguous by construction
widths = st.lists(st.integers(3, 7), min_size=1, max_size=3)
# what a degenerate unit keeps: nothing ("silent": it outputs 0) or a constant output
offsets = st.sampled_from([0.0, 0.7, -1.3])


def degenerate(
    state: Mapping[str, Tensor],
    spec: Spec,
    seed: int,
    offset: float,
    *,
    weights: bool = False,
    symmetries: tuple[str, ...] = ("scale", "sign"),
    units: int = 1,
) -> dict[str, Tensor]:
    """``state`` with ``units`` units of every group of ``symmetries`` (at most all but
    two) made degenerate, in all their producers: zero weights (or, after BatchNorm,
    gamma = 0; zero weights too with ``weights``), the first producer's bias (beta after
    BatchNorm) of the n-th such unit set to n times ``offset``, the others' to 0."""
    gen = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in state.items()}
    for group in spec.groups:
        if group.symmetry not in symmetries:
            continue
        picked = torch.randperm(group.size, generator=gen)[: max(1, min(units, group.size - 2))]
        for n, unit in enumerate(picked.tolist(), 1):
            _make_degenerate(out, group, unit, n * offset, weights)
    return out


def _make_degenerate(
    out: dict[str, Tensor], group: UnitGroup, unit: int, offset: float, weights: bool
) -> None:
    for i, producer in enumerate(group.producers):
        k = producer.start + unit  # a part of a fused projection's rows
        bn = producer.batchnorm
        if bn is None or weights:
            out[producer.weight][k] = 0.0
            if producer.bias is not None:
                out[producer.bias][k] = offset if i == 0 else 0.0
        if bn is not None and not weights:
            out[bn.weight][k] = 0.0
        if bn is not None:
            out[bn.bias][k] = offset if i == 0 else 0.0


def check_unique_canonical_form(
    model: nn.Module,
    state: dict[str, Tensor],
    seed: int,
    x: Tensor | None = None,
    reference: dict[str, Tensor] | None = None,
) -> None:
    """Normalization keeps the function and is idempotent; the network and a random
    symmetric copy of it have the same canonical form (which keeps the function; aligned
    to ``reference``, by default a random network of the architecture) and are at
    distance 0 (geodesic, and Euclidean over the units off spheres)."""
    spec = spec_from_module(model)
    x = inputs(model) if x is None else x
    y = outputs(model, state, x)
    copy = random_symmetry(state, spec, seed=seed + 1)
    assert_same_function(outputs(model, copy, x), y)
    once = normalize(state, spec)
    assert_same_function(outputs(model, once, x), y)
    # idempotent to rounding: a constant unit's BatchNorm terms can be large (zero weights)
    largest = max(float(v.abs().max()) for v in once.values() if v.is_floating_point())
    assert_states_close(normalize(once, spec), once, atol=1e-12 * max(1.0, largest))
    if reference is None:
        reference = state_of(randomize(model, seed + 2))
    canonical = canonicalize(state, spec, reference=reference)
    assert_same_function(outputs(model, canonical, x), y)
    assert_states_close(canonicalize(copy, spec, reference=reference), canonical, atol=1e-6)
    found = distances(state, copy, spec)
    assert found.geodesic < 1e-6
    assert found.euclidean_free is None or found.euclidean_free < 1e-6


def degenerate_model(kind: str, config: dict[str, Any], seed: int) -> nn.Module:
    """A built-in network with seeded random float64 parameters, in eval mode."""
    return randomize(build_model(kind, config), seed)


@settings(deadline=None)
@given(st.integers(2, 8), widths, st.integers(2, 4), st.booleans(), offsets, seeds)
def test_mlp_with_zeroed_rows(
    fan_in: int, hidden: list[int], classes: int, bias: bool, offset: float, seed: int
) -> None:
    """ReLU units with zero incoming weights, with and without a (zero or nonzero) bias."""
    config = {"in_features": fan_in, "hidden": hidden, "classes": classes, "bias": bias}
    model = degenerate_model("mlp", config, seed)
    spec = spec_from_module(model)
    check_unique_canonical_form(model, degenerate(state_of(model), spec, seed, offset), seed)


@settings(deadline=None)
@given(st.integers(2, 8), widths, st.sampled_from(["tanh", "sign"]), offsets, seeds)
def test_odd_mlp_with_zeroed_rows(
    fan_in: int, hidden: list[int], activation: str, offset: float, seed: int
) -> None:
    """Odd activations: a constant unit's sign is fixed, a silent unit's outgoing weights
    are zeroed."""
    config = {"in_features": fan_in, "hidden": hidden, "classes": 3, "activation": activation}
    model = degenerate_model("mlp", config, seed)
    spec = spec_from_module(model)
    check_unique_canonical_form(model, degenerate(state_of(model), spec, seed, offset), seed)


@settings(deadline=None)
@given(widths, st.booleans(), offsets, st.booleans(), seeds)
def test_batchnorm_mlp_with_zero_gamma(
    hidden: list[int], bias: bool, offset: float, weights: bool, seed: int
) -> None:
    """BatchNorm units with gamma = 0 (beta zero or not), or with zero weights."""
    config = {"in_features": 5, "hidden": hidden, "classes": 3, "bias": bias, "batchnorm": True}
    model = degenerate_model("mlp", config, seed)
    spec = spec_from_module(model)
    state = degenerate(state_of(model), spec, seed, offset, weights=weights)
    check_unique_canonical_form(model, state, seed)


@settings(deadline=None, max_examples=30)
@given(st.lists(st.integers(3, 5), min_size=1, max_size=2), offsets, st.booleans(), seeds)
def test_batchnorm_convnet_with_zero_gamma(
    channels: list[int], offset: float, weights: bool, seed: int
) -> None:
    """A VGG's BatchNorm filters with gamma = 0, or zero filters; its linear units with
    zero rows."""
    config = {"layers": [*channels, "M"], "in_channels": 2, "input_size": 4, "hidden": [4]}
    model = degenerate_model("vgg", config, seed)
    spec = spec_from_module(model)
    state = degenerate(state_of(model), spec, seed, offset, weights=weights)
    check_unique_canonical_form(model, state, seed)


@settings(deadline=None, max_examples=10)
@given(offsets, seeds)
def test_resnet_with_degenerate_stream_unit(offset: float, seed: int) -> None:
    """A unit of every residual stream (and block) with gamma = 0 in all its producers;
    only the first producer's beta is nonzero."""
    config = {"depth": 8, "width": 1, "input_size": 6, "in_channels": 1, "classes": 3}
    model = degenerate_model("resnet", config, seed)
    spec = spec_from_module(model)
    assert any(g.shared for g in spec.groups)
    check_unique_canonical_form(model, degenerate(state_of(model), spec, seed, offset), seed)


@pytest.mark.slow  # 20 traced attention models: seconds; CI runs it
@settings(deadline=None, max_examples=20)
@given(st.sampled_from(["separate", "fused", "grouped"]), offsets, seeds)
def test_attention_with_zeroed_query_and_value_dimensions(
    kind: str, offset: float, seed: int
) -> None:
    """A query and a value dimension of every attention layer with zero weights: with a
    nonzero bias the dimension is balanced by it; without, it computes nothing (nor do
    its key row and output column)."""
    config = {"vocab": 7, "context": 6, "width": 12, "heads": 3, "depth": 2}
    if kind == "grouped":  # 2 key/value heads for 4 query heads
        config |= {"width": 16, "heads": 4, "kv_heads": 2}
    model = degenerate_model("gpt", {**config, "fused": kind == "fused"}, seed)
    spec = spec_from_module(model)
    state = degenerate(state_of(model), spec, seed, offset, symmetries=("linear",))
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, config["vocab"], (5, config["context"]), generator=gen).double()
    check_unique_canonical_form(model, state, seed, tokens)


@settings(deadline=None, max_examples=40)
@given(
    st.lists(st.integers(4, 7), min_size=1, max_size=3),
    st.sampled_from(["relu", "tanh"]),
    st.integers(2, 3),
    st.sampled_from([0.7, -1.3]),
    st.booleans(),
    seeds,
)
def test_several_constant_units_in_a_layer(
    hidden: list[int], activation: str, units: int, offset: float, both: bool, seed: int
) -> None:
    """Several constant units in one layer (different constants, different outgoing
    weights) are alike to the incoming similarity, as are a degenerate reference's: the
    canonical form must not depend on the order they come in."""
    config = {"in_features": 5, "hidden": hidden, "classes": 3, "activation": activation}
    model = degenerate_model("mlp", config, seed)
    spec = spec_from_module(model)
    state = degenerate(state_of(model), spec, seed, offset, units=units)
    reference = None
    if both:
        other = state_of(randomize(model, seed + 2))
        reference = degenerate(other, spec, seed + 3, -offset, units=units)
    check_unique_canonical_form(model, state, seed, reference=reference)


@settings(deadline=None, max_examples=15)
@given(st.integers(2, 3), offsets, seeds)
def test_several_zero_gamma_filters_in_a_layer(units: int, offset: float, seed: int) -> None:
    """A VGG's layers with several BatchNorm filters of gamma = 0."""
    config = {"layers": [6, 5, "M"], "in_channels": 2, "input_size": 4, "hidden": [5]}
    model = degenerate_model("vgg", config, seed)
    spec = spec_from_module(model)
    check_unique_canonical_form(
        model, degenerate(state_of(model), spec, seed, offset, units=units), seed
    )


@settings(deadline=None, max_examples=20)
@given(st.lists(st.integers(4, 7), min_size=1, max_size=2), st.integers(2, 3), seeds)
def test_activation_matching_of_several_constant_units(
    hidden: list[int], units: int, seed: int
) -> None:
    """Constant units have constant activations, uncorrelated with every unit: activation
    matching settles them by their weights too, whatever order they come in."""
    config = {"in_features": 5, "hidden": hidden, "classes": 3}
    model = degenerate_model("mlp", config, seed)
    spec = spec_from_module(model)
    state = normalize(degenerate(state_of(model), spec, seed, 0.7, units=units), spec)
    copy = normalize(random_symmetry(state, spec, seed=seed + 1), spec)
    reference = normalize(state_of(randomize(model, seed + 2)), spec)
    x = inputs(model, n=64, seed=seed)

    def aligned(net: dict[str, Tensor]) -> dict[str, Tensor]:
        found = match_activations(net, reference, spec, model, x, batch=64)
        return apply_alignment(net, found, spec)

    assert_states_close(aligned(copy), aligned(state), atol=1e-9)

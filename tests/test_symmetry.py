"""Normalization, alignment and canonical forms on every architecture canon supports."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from nets import (
    assert_same_function,
    assert_states_close,
    inputs,
    measure_batch_statistics,
    outputs,
    randomize,
    state_of,
    traced,
)
from strategies import models

from canon.architectures import build_model
from canon.core import (
    Alignment,
    UnitScales,
    align,
    apply_alignment,
    canonicalize,
    match,
    normalize,
    random_symmetry,
    rescale,
    unit_scales,
)
from canon.core.geometry import distances
from canon.core.permutations import (
    MOVE_SLAB,
    UnitAxis,
    compose_alignments,
    invert_alignment,
    moved,
    through_reference,
)
from canon.core.units import gather_units, permute_units, scale_units, unit_vectors
from canon.errors import NonFiniteError, SpecMismatchError

seeds = st.integers(0, 2**31 - 1)


@given(models(), seeds)
def test_random_symmetry_preserves_function(model, seed):
    """A random element of the symmetry group leaves the eval-mode function unchanged."""
    model = randomize(model, seed)
    spec, state, x = traced(model), state_of(model), inputs(model)
    copy = random_symmetry(state, spec, seed=seed + 1)
    assert_same_function(outputs(model, copy, x), outputs(model, state, x))


@given(models(), seeds)
def test_normalize_preserves_function(model, seed):
    """Normalization (Alg. 1) preserves logits up to the output layer's global factor."""
    model = randomize(model, seed)
    spec, state, x = traced(model), state_of(model), inputs(model)
    assert_same_function(outputs(model, normalize(state, spec), x), outputs(model, state, x))


@given(models(), seeds, seeds)
def test_align_preserves_function(model, seed, ref_seed):
    """Aligning to an unrelated reference (Alg. 2) preserves the function exactly."""
    model = randomize(model, seed)
    spec, state, x = traced(model), state_of(model), inputs(model)
    reference = state_of(randomize(model, ref_seed))
    aligned, _ = align(state, reference, spec)
    torch.testing.assert_close(outputs(model, aligned, x), outputs(model, state, x))


@given(models(), seeds)
def test_normalize_is_idempotent(model, seed):
    """normalize(normalize(w)) == normalize(w)."""
    model = randomize(model, seed)
    spec, state = traced(model), state_of(model)
    once = normalize(state, spec)
    assert_states_close(normalize(once, spec), once, atol=1e-12)


@given(models(), seeds)
def test_normalized_units_have_unit_norm(model, seed):
    """After normalization each normalized unit's effective weight has norm 1, the
    output layer Frobenius norm sqrt(H^L), and BN gammas are non-negative."""
    model = randomize(model, seed)
    spec = traced(model)
    normalized = normalize(state_of(model), spec)
    for group in spec.groups:
        if group.normalized:
            norms = unit_vectors(normalized, group).norm(dim=1)
            torch.testing.assert_close(norms, torch.ones_like(norms))
        if group.producers[0].batchnorm is not None:
            assert (normalized[group.producers[0].batchnorm.weight] >= 0).all()
    if spec.output is not None:
        norm = normalized[spec.output.weight].norm()
        assert math.isclose(float(norm), math.sqrt(spec.output.size), rel_tol=1e-12)


@given(models(), seeds, st.floats(0.25, 4.0))
def test_rescale_puts_the_scales_back_with_the_same_function(model, seed, factor):
    """``rescale(normalize(w), s)`` computes w's function and has the scales s (``s`` the
    network's own scales, times a factor); with w's own scales, a network without
    BatchNorm comes back exactly."""
    model = randomize(model, seed)
    spec, state, x = traced(model), state_of(model), inputs(model)
    own = unit_scales(state, spec)
    scaled = UnitScales(
        {g: s * factor for g, s in own.groups.items()},
        None if own.output is None else own.output * factor,
    )
    back = rescale(normalize(state, spec), spec, scaled)
    assert_same_function(outputs(model, back, x), outputs(model, state, x))
    found = unit_scales(back, spec)
    assert found.groups.keys() == own.groups.keys()
    for name in own.groups:
        torch.testing.assert_close(found.groups[name], scaled.groups[name], rtol=1e-9, atol=0)
    if own.output is not None:
        assert math.isclose(found.output, scaled.output, rel_tol=1e-9)
    has_bn = any(p.batchnorm is not None for g in spec.groups for p in g.producers)
    if not has_bn:
        assert_states_close(rescale(normalize(state, spec), spec, own), state, atol=1e-9)


def test_rescale_rejects_scales_of_another_shape():
    """Scales whose size is not the group's are refused, naming the group."""
    model = randomize(build_model("mlp", {"in_features": 4, "hidden": [3], "classes": 2}), 0)
    spec, state = traced(model), state_of(model)
    wrong = UnitScales({"fc1": torch.ones(5, dtype=torch.float64)}, None)
    with pytest.raises(SpecMismatchError, match="group `fc1`"):
        rescale(normalize(state, spec), spec, wrong)


@given(models(), seeds, seeds)
def test_normalize_and_alignment_leave_their_inputs_as_they_were(model, seed, ref_seed):
    """Normalizing (which scales its own copies in place), aligning and measuring distances
    change no tensor they were given, bit for bit."""
    model = randomize(model, seed)
    spec = traced(model)
    state, reference = state_of(model), state_of(randomize(model, ref_seed))
    before = {k: v.clone() for k, v in state.items()}
    norm_state, norm_reference = normalize(state, spec), normalize(reference, spec)
    apply_alignment(state, match(norm_state, norm_reference, spec), spec)
    distances(reference, state, spec)
    canonicalize(state, spec, reference=reference)
    for k, v in state.items():
        assert torch.equal(v, before[k]), k


@given(
    st.integers(1, 6), st.integers(1, 5), st.integers(0, 3), st.integers(0, 3), st.integers(0, 99)
)
def test_permute_units_moves_whole_blocks(units, block, head_pad, tail_pad, seed):
    """Reordering units of ``block`` entries (a flattened conv output), alone on their axis
    or between other entries, moves each unit's block as the index of its entries does."""
    gen = torch.Generator().manual_seed(seed)
    total = head_pad + units * block + tail_pad
    t = torch.randn(3, total, 2, generator=gen)
    perm = torch.randperm(units, generator=gen)
    index = torch.arange(total)
    index[head_pad : head_pad + units * block] = head_pad + (
        perm.unsqueeze(1) * block + torch.arange(block)
    ).reshape(-1)
    moved = permute_units(t, 1, perm, block, head_pad)
    assert torch.equal(moved, t[:, index])


@given(st.integers(1, 4), st.integers(1, 3), st.integers(2, 3), st.integers(0, 2), seeds)
def test_interleaved_parts_move_and_scale_only_their_rows(heads, d, parts, part, seed):
    """A part of a fused projection whose rows interleave the parts head by head (GPT-NeoX:
    unit (h, j) of part p is row h * parts * d + p * d + j): reordering, gathering and
    scaling its units touch exactly its rows, in its units' order, and leave the other
    parts' rows as they are."""
    part = min(part, parts - 1)
    gen = torch.Generator().manual_seed(seed)
    units, width = heads * d, parts * d
    t = torch.randn(heads * width, 3, generator=gen)
    rows = torch.tensor([h * width + part * d + j for h in range(heads) for j in range(d)])
    layout = {"start": part * d, "head": d, "stride": width}
    perm = torch.randperm(units, generator=gen)
    factors = torch.rand(units, generator=gen) + 0.5
    index = torch.arange(len(t))
    index[rows] = rows[perm]
    assert torch.equal(permute_units(t, 0, perm, **layout), t[index])
    assert torch.equal(gather_units(t, 0, units, **layout).reshape(units, 3), t[rows])
    expected = t.clone()
    expected[rows] *= factors.unsqueeze(1)
    assert torch.equal(scale_units(t, 0, factors, **layout), expected)


@given(st.sampled_from(["rows-cols", "cols-rows", "two-ranges", "rows-rows"]), seeds)
def test_a_large_tensor_moved_along_several_axes_equals_the_moves_one_by_one(layout, seed):
    """A tensor above MOVE_SLAB moved along several unit axes (copied once, its later axes
    reordered in slabs, whatever their order) equals each axis's move applied in turn:
    permutations, blocks, ranges of an axis and sign flips included."""
    gen = torch.Generator().manual_seed(seed)
    rows, blocks, block = 96, 1366, 8  # 96 x 10,928 numbers: above MOVE_SLAB
    t = torch.randn(rows, blocks * block, generator=gen)
    assert t.numel() > MOVE_SLAB
    half = blocks // 2
    axes = {
        "rows-cols": (UnitAxis("r", 0, 1, True), UnitAxis("c", 1, block, True)),
        "cols-rows": (UnitAxis("c", 1, block, False), UnitAxis("r", 0, 1, True)),
        "two-ranges": (
            UnitAxis("c", 1, block, True),
            UnitAxis("d", 1, block, True, start=half * block),
            UnitAxis("r", 0, 1, False),
        ),
        "rows-rows": (UnitAxis("r", 0, 1, True, start=rows // 2), UnitAxis("s", 0, 1, True)),
    }[layout]
    # where two groups share an axis, each has half of it
    sizes = {
        "r": rows // 2 if layout == "rows-rows" else rows,
        "s": rows // 2,
        "c": half if layout == "two-ranges" else blocks,
        "d": half,
    }
    alignment = Alignment(
        permutations={g: torch.randperm(n, generator=gen) for g, n in sizes.items()},
        signs={g: torch.randint(0, 2, (n,), generator=gen) * 2.0 - 1 for g, n in sizes.items()},
    )
    expected = t
    for a in axes:
        perm = alignment.permutations[a.group]
        expected = permute_units(expected, a.axis, perm, a.block, a.start)
        if a.signed:
            expected = scale_units(expected, a.axis, alignment.signs[a.group], a.block, a.start)
    before = t.clone()
    assert torch.equal(moved(t, axes, alignment), expected)
    assert torch.equal(t, before)  # the caller's tensor is not written into


@given(models(), seeds, seeds)
def test_canonical_form_is_invariant(model, seed, transform_seed):
    """A permuted, rescaled, sign-flipped copy has the same canonical form (to 1e-5)."""
    model = randomize(model, seed)
    spec, state = traced(model), state_of(model)
    copy = random_symmetry(state, spec, seed=transform_seed)
    assert_states_close(
        canonicalize(copy, spec, reference=state), canonicalize(state, spec, reference=state), 1e-5
    )


@given(models(), seeds, seeds, seeds)
def test_canonical_form_is_invariant_for_any_reference(model, seed, ref_seed, transform_seed):
    """The copy and the original align to an unrelated reference in the same way."""
    model = randomize(model, seed)
    spec, state = traced(model), state_of(model)
    reference = state_of(randomize(model, ref_seed))
    copy = random_symmetry(state, spec, seed=transform_seed)
    assert_states_close(
        canonicalize(copy, spec, reference=reference),
        canonicalize(state, spec, reference=reference),
        1e-5,
    )


@given(models(), seeds)
def test_self_alignment_is_identity(model, seed):
    """Aligning a network to itself gives identity permutations and positive signs."""
    model = randomize(model, seed)
    spec, state = traced(model), state_of(model)
    aligned, alignment = align(state, state, spec)
    assert alignment.is_identity
    assert set(alignment.permutations) == {g.name for g in spec.groups}
    assert set(alignment.signs) == {g.name for g in spec.groups if g.symmetry == "sign"}
    assert_states_close(aligned, state, atol=0)


@given(models(), seeds, seeds)
def test_alignment_undoes_a_permutation(model, seed, transform_seed):
    """Aligning a scrambled copy back to the original recovers the original's raw layout
    for the permutation (and sign) part: the aligned copy differs only by per-unit scales."""
    model = randomize(model, seed)
    spec, state = traced(model), state_of(model)
    copy = random_symmetry(state, spec, seed=transform_seed)
    aligned, _ = align(copy, state, spec)
    assert_states_close(normalize(aligned, spec), normalize(state, spec), 1e-6)
    again, _ = align(aligned, state, spec)
    assert_states_close(again, aligned, atol=0)


def test_bn_with_default_eps_is_preserved_within_eps():
    """With BatchNorm's default eps and running statistics measured on data,
    normalization changes logits only by the eps effect (relative 1e-3 here)."""
    model = randomize(
        build_model("vgg", {"layers": [6, "M", 8, "M"], "input_size": 8, "hidden": [7]}),
        seed=3,
        bn_eps=None,
    )
    x = inputs(model, n=256)
    measure_batch_statistics(model, x, 256)
    spec, state = traced(model), state_of(model)
    assert_same_function(outputs(model, normalize(state, spec), x), outputs(model, state, x), 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_agree(dtype):
    """Canonical forms do not depend on the float precision beyond its resolution."""
    model = randomize(build_model("mlp", {"in_features": 30, "hidden": [40, 40]}), seed=1)
    spec, state = traced(model), state_of(model)
    copy = random_symmetry(state, spec, seed=2)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in copy.items()}
    ref = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    result = canonicalize(cast, spec, reference=ref)
    assert all(v.dtype == dtype for v in result.values())
    expected = canonicalize(state, spec, reference=state)
    assert_states_close({k: v.double() for k, v in result.items()}, expected, 1e-5)


def test_inputs_are_not_modified():
    """normalize, align and canonicalize leave their inputs untouched."""
    model = randomize(build_model("vgg", {"layers": [4, "M"], "input_size": 4, "hidden": []}), 0)
    spec, state = traced(model), state_of(model)
    reference = state_of(randomize(model, 1))
    before = {k: v.clone() for k, v in state.items()}
    normalize(state, spec)
    align(state, reference, spec)
    canonicalize(state, spec, reference=reference)
    assert_states_close(state, before, atol=0)


def test_bad_state_is_rejected():
    """Missing, extra, misshapen and non-finite tensors each give one clear error."""
    model = randomize(build_model("mlp", {"in_features": 4, "hidden": [3]}), 0)
    spec, state = traced(model), state_of(model)
    missing = {k: v for k, v in state.items() if k != "fc1.bias"}
    with pytest.raises(SpecMismatchError, match=r"missing tensor `fc1.bias`"):
        canonicalize(missing, spec)
    with pytest.raises(SpecMismatchError, match=r"unexpected tensor `extra`"):
        align({**state, "extra": torch.zeros(1)}, state, spec)
    with pytest.raises(SpecMismatchError, match=r"`fc1.weight` has shape \[3, 5\]"):
        canonicalize({**state, "fc1.weight": torch.zeros(3, 5)}, spec)
    nan = {**state, "out.weight": state["out.weight"].clone()}
    nan["out.weight"][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"out\.weight"):
        canonicalize(nan, spec, reference=state)


def _random_alignment(spec, seed):
    gen = torch.Generator().manual_seed(seed)
    return Alignment(
        {g.name: torch.randperm(g.size, generator=gen) for g in spec.groups},
        {
            g.name: torch.randint(0, 2, (g.size,), generator=gen).float() * 2 - 1
            for g in spec.groups
            if g.signed
        },
    )


@given(models(), seeds, seeds, seeds)
def test_composed_and_inverted_alignments_move_states_as_their_parts(model, seed, s1, s2):
    """Moving a state by ``compose_alignments(A, B)`` is moving it by A and then by B, and
    ``invert_alignment(A)`` moves it back: tensor for tensor, exactly."""
    model = randomize(model, seed)
    spec, state = traced(model), state_of(model)
    first, then = _random_alignment(spec, s1), _random_alignment(spec, s2)
    twice = apply_alignment(apply_alignment(state, first, spec), then, spec)
    assert_states_close(
        apply_alignment(state, compose_alignments(first, then), spec), twice, atol=0
    )
    back = apply_alignment(apply_alignment(state, first, spec), invert_alignment(first), spec)
    assert_states_close(back, state, atol=0)


@given(models(), seeds, seeds, seeds, seeds)
def test_alignment_through_a_reference_aligns_two_copies(model, seed, ref_seed, s1, s2):
    """Two scrambled copies of one network, each aligned to an unrelated reference once:
    their alignments to it, composed (``through_reference``), align one copy to the other
    as aligning the pair directly does."""
    model = randomize(model, seed)
    spec, state = traced(model), state_of(model)
    reference = normalize(state_of(randomize(model, ref_seed)), spec)
    a = normalize(random_symmetry(state, spec, seed=s1), spec)
    b = normalize(random_symmetry(state, spec, seed=s2), spec)
    a_to_ref, b_to_ref = match(a, reference, spec), match(b, reference, spec)
    via = apply_alignment(b, through_reference(b_to_ref, a_to_ref), spec)
    assert_states_close(via, apply_alignment(b, match(b, a, spec), spec), 1e-6)
    assert_states_close(via, a, 1e-5)

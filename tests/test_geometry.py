"""Distances and paths: angles, slerp stability, geodesic points on their spheres, planes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from nets import randomize, state_of, traced
from strategies import models

from canon.architectures import build_model
from canon.core import apply_alignment, canonicalize, match, normalize, random_symmetry
from canon.core.geometry import angles, distances, geodesic_distance
from canon.core.paths import (
    bend_path,
    flip_path,
    geodesic_path,
    linear_path,
    plane_grid,
    positions,
    slerp_basis,
)

seeds = st.integers(0, 2**31 - 1)


def independent_geodesic(a, b, spec) -> float:
    """The geodesic distance recomputed with numpy: arccos of clipped cosines over the
    normalized units (tanh units keep their norms: not on spheres)."""
    total = 0.0
    for group in spec.groups:
        if not group.normalized:
            continue
        wa = a[group.weights[0]].reshape(group.size, -1).numpy()
        wb = b[group.weights[0]].reshape(group.size, -1).numpy()
        for ra, rb in zip(wa, wb, strict=True):
            cos = np.dot(ra, rb) / (np.linalg.norm(ra) * np.linalg.norm(rb))
            total += math.acos(min(1.0, max(-1.0, cos))) ** 2
    if spec.output is not None:
        wa = a[spec.output.weight].reshape(-1).numpy()
        wb = b[spec.output.weight].reshape(-1).numpy()
        cos = np.dot(wa, wb) / (np.linalg.norm(wa) * np.linalg.norm(wb))
        total += spec.output.size * math.acos(min(1.0, max(-1.0, cos))) ** 2
    return math.sqrt(total)


@given(models(), seeds, seeds)
def test_geodesic_distance_is_the_sum_of_unit_angles(model, seed_a, seed_b):
    """The geodesic distance equals sqrt(sum of squared per-unit angles + output term)."""
    model = randomize(model, seed_a)
    spec = traced(model)
    a = normalize(state_of(model), spec)
    b = canonicalize(state_of(randomize(model, seed_b)), spec, reference=a)
    expected = independent_geodesic(a, b, spec)
    assert math.isclose(geodesic_distance(a, b, spec), expected, rel_tol=1e-7, abs_tol=1e-7)
    assert math.isclose(distances(a, b, spec).geodesic, expected, rel_tol=1e-7, abs_tol=1e-7)


@given(models(), seeds, seeds)
def test_distances_are_symmetric(model, seed_a, seed_b):
    """d(a, b) == d(b, a) for every distance."""
    model = randomize(model, seed_a)
    spec = traced(model)
    a, b = state_of(model), state_of(randomize(model, seed_b))
    ab, ba = distances(a, b, spec).to_dict(), distances(b, a, spec).to_dict()
    assert ab.keys() == ba.keys()
    for key in ab:
        assert math.isclose(ab[key], ba[key], rel_tol=1e-9, abs_tol=1e-9), key


@given(models(), seeds, seeds)
def test_symmetric_copy_is_at_distance_zero(model, seed, transform_seed):
    """A permuted, rescaled, sign-flipped copy is at geodesic (and aligned Hamming) distance 0."""
    model = randomize(model, seed)
    spec = traced(model)
    a = state_of(model)
    d = distances(a, random_symmetry(a, spec, seed=transform_seed), spec)
    assert d.geodesic < 1e-6
    if d.hamming_aligned is not None:
        assert d.hamming_aligned == 0


def test_euclidean_distances_of_a_layer_wider_than_a_block_are_exact():
    """The raw and aligned Euclidean distances of float32 networks whose first layer spans
    several of the blocks they are summed in equal numpy's float64 norms of the
    differences (to rounding), and neither network is changed."""
    config = {"in_features": 700, "hidden": [600], "classes": 10}  # 420,000 > 2**18 weights
    model = build_model("mlp", config)
    spec = traced(model)
    a = {k: v.float() for k, v in state_of(randomize(model, 0)).items()}
    b = {k: v.float() for k, v in state_of(randomize(build_model("mlp", config), 1)).items()}
    before = {k: v.clone() for k, v in (a | {f"b.{k}": v for k, v in b.items()}).items()}
    alignment = match(normalize(b, spec), normalize(a, spec), spec)
    moved = apply_alignment(b, alignment, spec)

    def norm(x, y):
        diffs = [(x[n].double() - y[n].double()).numpy().ravel() for n in spec.parameters]
        return math.sqrt(sum(float(np.dot(d, d)) for d in diffs))

    d = distances(a, b, spec, alignment)
    assert math.isclose(d.euclidean, norm(a, b), rel_tol=1e-12)
    assert math.isclose(d.euclidean_aligned, norm(a, moved), rel_tol=1e-12)
    assert d.euclidean_aligned < d.euclidean
    for k, v in (a | {f"b.{k}": v for k, v in b.items()}).items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("gap", [0.0, 1e-9, 1e-4, 1.0, math.pi - 1e-4, math.pi])
def test_output_angle_over_blocks_is_the_angle_of_the_whole_vectors(gap):
    """The geodesic distance's output term for an output layer wider than a block is
    sqrt(H^L) times the angle between the two weights as single vectors, as ``angles``
    gives it on the whole rows, to 1e-12 and also near 0 and pi."""
    config = {"in_features": 3, "hidden": [40_000], "classes": 8}  # 320,000 > 2**18
    model = build_model("mlp", config)
    spec = traced(model)
    a = {k: v.float() for k, v in state_of(randomize(model, 0)).items()}
    gen = torch.Generator().manual_seed(1)
    w = a["out.weight"].double()
    other = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    other -= (other * w).sum() / (w * w).sum() * w  # orthogonal to w
    turned = math.cos(gap) * w / w.norm() + math.sin(gap) * other / other.norm()
    b = dict(a) | {"out.weight": (3 * turned).float()}
    expected = angles(
        a["out.weight"].double().reshape(1, -1), b["out.weight"].double().reshape(1, -1)
    )
    assert math.isclose(
        geodesic_distance(a, b, spec),
        math.sqrt(8) * float(expected[0]),
        rel_tol=1e-12,
        abs_tol=1e-12,
    )


def test_binary_distances():
    """Hamming distances count differing weight signs, raw and aligned, with fractions."""
    model = randomize(build_model("binary_mlp", {"in_features": 6, "hidden": [5], "classes": 3}), 0)
    spec = traced(model)
    a = state_of(model)
    b = {k: v.clone() for k, v in a.items()}
    smallest = a["fc1.weight"][0].abs().argmin()
    b["fc1.weight"][0, smallest] *= -1  # one sign differs; unit 0 stays best matched to itself
    scrambled = random_symmetry(b, spec, seed=3)
    d = distances(a, scrambled, spec)
    total = 5 * 6 + 3 * 5
    assert d.hamming > 1
    assert d.hamming_aligned == 1
    assert d.hamming_aligned_fraction == pytest.approx(1 / total)


@pytest.mark.parametrize("theta", [0.0, 1e-12, 1e-6, 1.0, math.pi - 1e-6, math.pi - 1e-12, math.pi])
def test_slerp_is_stable_near_zero_and_pi(theta):
    """Points along the great circle stay on the sphere at angle x*theta from a, finite,
    with exact endpoints, even for (anti)parallel units."""
    a = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[math.cos(theta), math.sin(theta), 0.0]], dtype=torch.float64)
    spec = traced(build_model("mlp", {"in_features": 3, "hidden": [1], "classes": 2}))
    state_a = {"fc1.weight": a, "fc1.bias": torch.zeros(1, dtype=torch.float64)}
    state_b = {"fc1.weight": b, "fc1.bias": torch.zeros(1, dtype=torch.float64)}
    other = {
        "out.weight": torch.ones(2, 1, dtype=torch.float64),
        "out.bias": torch.zeros(2, dtype=torch.float64),
    }
    x = positions(11)
    path = geodesic_path({**state_a, **other}, {**state_b, **other}, spec, x)
    for k in range(len(x)):
        w = path.tensors["fc1.weight"].at(k)
        assert torch.isfinite(w).all()
        assert float(w.norm()) == pytest.approx(1.0, abs=1e-12)
        assert float(angles(a, w)[0]) == pytest.approx(float(x[k]) * theta, abs=1e-9)
    assert torch.equal(path.tensors["fc1.weight"].at(0), a)
    assert torch.equal(path.tensors["fc1.weight"].at(len(x) - 1), b)
    u, _, _, _ = slerp_basis(a, b)
    assert float((u * a).sum()) == pytest.approx(0.0, abs=1e-12)


@given(
    st.lists(st.floats(0.0, math.pi), min_size=1, max_size=6),
    st.lists(st.floats(0.5, 2.0), min_size=6, max_size=6),
    seeds,
)
def test_great_circles_in_float32_follow_slerp_whichever_bases_they_keep(thetas, norms, seed):
    """A float32 layer's points are slerp's (float64, independently) to float32 rounding,
    norms interpolated linearly; written in the endpoints alone when every unit's angle
    is at most 2.5 rad, with the orthogonal vector u beside them when one is wider."""
    assume(not any(2.49 < t < 2.51 for t in thetas))  # float32 rounding moves the angles
    gen = torch.Generator().manual_seed(seed)
    width = 5
    e1 = torch.randn(len(thetas), width, generator=gen, dtype=torch.float64)
    e1 = e1 / e1.norm(dim=1, keepdim=True)
    e2 = torch.randn(len(thetas), width, generator=gen, dtype=torch.float64)
    e2 = e2 - (e2 * e1).sum(1, keepdim=True) * e1
    e2 = e2 / e2.norm(dim=1, keepdim=True)
    theta = torch.tensor(thetas, dtype=torch.float64).unsqueeze(1)
    r_a = torch.tensor(norms[: len(thetas)], dtype=torch.float64).unsqueeze(1)
    r_b = torch.tensor(norms[::-1][: len(thetas)], dtype=torch.float64).unsqueeze(1)
    a = (r_a * e1).float()
    b = (r_b * (torch.cos(theta) * e1 + torch.sin(theta) * e2)).float()
    spec = traced(build_model("mlp", {"in_features": width, "hidden": [len(thetas)]}))
    bias = torch.zeros(len(thetas))
    out = {"out.weight": torch.ones(10, len(thetas)), "out.bias": torch.zeros(10)}
    x = positions(9)
    ends = [{"fc1.weight": w, "fc1.bias": bias, **out} for w in (a, b)]
    path = geodesic_path(ends[0], ends[1], spec, x)
    weights = path.tensors["fc1.weight"]
    assert len(weights.bases) == (2 if max(thetas) <= 2.5 else 3)  # type: ignore[attr-defined]
    a64, b64 = a.double(), b.double()
    angle = angles(a64, b64).unsqueeze(1)
    u = slerp_basis(a64, b64)[0]
    a_hat = a64 / a64.norm(dim=1, keepdim=True)
    for k, t in enumerate(x.tolist()):
        radius = (1 - t) * a64.norm(dim=1, keepdim=True) + t * b64.norm(dim=1, keepdim=True)
        expected = radius * (torch.cos(t * angle) * a_hat + torch.sin(t * angle) * u)
        torch.testing.assert_close(weights.at(k).double(), expected, atol=2e-6, rtol=0)
    assert torch.equal(weights.at(0), a) and torch.equal(weights.at(len(x) - 1), b)


@given(models(), seeds, seeds)
def test_interior_geodesic_points_lie_on_the_spheres(model, seed_a, seed_b):
    """Every geodesic point has unit-norm normalized units and output norm sqrt(H^L),
    and the endpoints are the two networks exactly."""
    model = randomize(model, seed_a)
    spec = traced(model)
    a = normalize(state_of(model), spec)
    b = canonicalize(state_of(randomize(model, seed_b)), spec, reference=a)
    path = geodesic_path(a, b, spec, positions(7))
    for k in range(len(path)):
        point = path.state(k)
        for group in spec.groups:
            if group.normalized and group.producers[0].batchnorm is None:
                norms = point[group.weights[0]].reshape(group.size, -1).norm(dim=1)
                torch.testing.assert_close(norms, torch.ones_like(norms))
        if spec.output is not None:
            norm = float(point[spec.output.weight].norm())
            assert norm == pytest.approx(math.sqrt(spec.output.size), rel=1e-9)
    for name in a:
        assert torch.equal(path.tensors[name].at(0), a[name])
        assert torch.equal(path.tensors[name].at(len(path) - 1), b[name])


def test_linear_and_bend_paths_have_exact_endpoints_and_midpoint():
    """Linear paths interpolate exactly; a bend passes through its midpoint at x = 0.5."""
    model = randomize(build_model("mlp", {"in_features": 4, "hidden": [3]}), 0)
    spec = traced(model)
    a, b, m = (normalize(state_of(randomize(model, s)), spec) for s in (1, 2, 3))
    x = positions(5)
    line = linear_path(a, b, x)
    torch.testing.assert_close(line.state(2)["fc1.weight"], (a["fc1.weight"] + b["fc1.weight"]) / 2)
    bend = bend_path(a, m, b, spec, x)
    for name in a:
        assert torch.equal(bend.tensors[name].at(0), a[name])
        assert torch.equal(bend.tensors[name].at(2), m[name])
        assert torch.equal(bend.tensors[name].at(4), b[name])
    with pytest.raises(ValueError, match="odd number of points"):
        bend_path(a, m, b, spec, positions(4))


def test_flip_path_flips_a_fraction_of_the_differing_signs():
    """At x the random-flip path has flipped round(x * D) of the D differing weights."""
    model = randomize(build_model("binary_mlp", {"in_features": 8, "hidden": [6], "classes": 3}), 0)
    spec = traced(model)
    a, b = state_of(model), state_of(randomize(model, 1))
    total = distances(a, b, spec).hamming
    x = positions(5)
    path = flip_path(a, b, spec, x, seed=0)
    for k in range(5):
        point = path.state(k)
        flipped = sum(
            int((torch.sign(point[n]) != torch.sign(a[n])).sum()) for n in spec.binary_weights
        )
        assert flipped == round(float(x[k]) * total)
    assert all(torch.equal(path.state(4)[n], torch.sign(b[n])) for n in spec.binary_weights)
    other = flip_path(a, b, spec, x, seed=1)
    assert not torch.equal(other.state(2)["fc1.weight"], path.state(2)["fc1.weight"])


def test_plane_grid_contains_the_three_networks():
    """The plane's coordinates of a, b, c reproduce them (Gram-Schmidt basis)."""
    model = randomize(build_model("mlp", {"in_features": 4, "hidden": [3]}), 0)
    spec = traced(model)
    a, b, c = (state_of(randomize(model, s)) for s in (1, 2, 3))
    grid = plane_grid(a, b, c, spec.parameters, grid=3, margin=0.0)
    for name in spec.parameters:
        base, u, v = grid.path.tensors[name].bases
        for target, (alpha, beta) in zip((a, b, c), grid.anchors.tolist(), strict=True):
            torch.testing.assert_close(base + alpha * u + beta * v, target[name])
    with pytest.raises(ValueError, match="not on one line"):
        plane_grid(a, b, b, spec.parameters, grid=3, margin=0.0)

"""Units off the spheres, precision, and tensors shared between groups.

tanh units keep their norms, so they are not points on spheres: their
distance is the free Euclidean term and they move linearly along geodesics.
bfloat16 and mixed-precision pairs are matched, and evaluated, in at least float32.
A per-unit tensor applied to two separately permuted groups is refused.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from nets import outputs, randomize, state_of, traced
from torch import Tensor, nn

from canon.architectures import build_model
from canon.core import canonicalize, normalize, random_symmetry
from canon.core.geometry import distances
from canon.core.paths import geodesic_path, positions
from canon.core.permutations import solve_assignment
from canon.core.precision import state_dtype, to_working, working_dtype
from canon.core.spec import CarriedAxis, Producer, Spec, UnitGroup
from canon.engine import path_curve, path_curves
from canon.errors import SpecMismatchError, UnsupportedModuleError
from canon.zoo import Zoo

seeds = st.integers(0, 2**31 - 1)
HIDDEN = ("fc1", "fc2")


def mlp(activation: str, seed: int, width: int = 8) -> nn.Module:
    """A seeded float64 MLP with two hidden layers of ``activation`` units."""
    config = {"in_features": 6, "hidden": [width, width], "classes": 4, "activation": activation}
    return randomize(build_model("mlp", config), seed)


def rescaled_hidden(state: dict[str, Tensor], factor: float) -> dict[str, Tensor]:
    """``state`` with every hidden unit's incoming weights and bias times ``factor``."""
    out = dict(state)
    for layer in HIDDEN:
        for name in (f"{layer}.weight", f"{layer}.bias"):
            out[name] = state[name] * factor
    return out


# tanh units are not on spheres


@pytest.mark.parametrize(
    ("activation", "on_sphere"), [("tanh", False), ("relu", True), ("sign", True)]
)
def test_only_normalized_units_are_on_spheres(activation: str, on_sphere: bool) -> None:
    """tanh units keep their scale (off the spheres); ReLU units and sign units, whose
    scale normalization removes, are points on spheres."""
    spec = traced(mlp(activation, 0))
    assert [g.on_sphere for g in spec.groups] == [on_sphere, on_sphere]
    assert all(g.on_sphere == g.normalized for g in spec.groups)


@given(seeds)
def test_rescaled_tanh_units_are_at_a_clear_distance(seed: int) -> None:
    """Scaling a tanh net's hidden units by 3 changes its function, and the distance
    says so, in the free Euclidean term (it was ~0, with no free term)."""
    model = mlp("tanh", seed)
    spec = traced(model)
    a = state_of(model)
    b = rescaled_hidden(a, 3.0)
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert not torch.allclose(outputs(model, a, x), outputs(model, b, x), atol=1e-3)
    found = distances(a, b, spec)
    assert found.euclidean_free is not None
    expected = 2.0 * sum(float(a[f"{n}.weight"].norm() ** 2) for n in HIDDEN) ** 0.5
    assert found.euclidean_free == pytest.approx(expected, rel=1e-9)


@given(seeds, seeds)
def test_tanh_copy_is_at_distance_zero(seed: int, sym_seed: int) -> None:
    """A tanh net and a random symmetry of it (permuted, signs flipped) are at distance 0
    in both the geodesic and the free term."""
    model = mlp("tanh", seed)
    spec = traced(model)
    a = state_of(model)
    found = distances(a, random_symmetry(a, spec, seed=sym_seed), spec)
    assert found.geodesic == pytest.approx(0.0, abs=1e-6)
    assert found.euclidean_free == pytest.approx(0.0, abs=1e-9)


def test_rescaled_sign_units_stay_at_distance_zero() -> None:
    """A sign unit's output does not depend on its incoming scale: rescaled, a binary
    activation net is the same point on its spheres, with no free term."""
    model = mlp("sign", 1)
    spec = traced(model)
    a = state_of(model)
    found = distances(a, rescaled_hidden(a, 3.0), spec)
    assert found.geodesic == pytest.approx(0.0, abs=1e-7)
    assert found.euclidean_free is None


@given(seeds, seeds)
def test_tanh_units_move_linearly_along_the_geodesic(seed_a: int, seed_b: int) -> None:
    """Along the geodesic path, tanh units' full vectors move linearly (their norms
    included); the endpoints are the two networks exactly."""
    model = mlp("tanh", seed_a)
    spec = traced(model)
    a = normalize(state_of(model), spec)
    b = canonicalize(rescaled_hidden(state_of(mlp("tanh", seed_b)), 2.0), spec, reference=a)
    x = positions(5)
    path = geodesic_path(a, b, spec, x)
    for name in a:
        assert torch.equal(path.state(0)[name], a[name])
        assert torch.equal(path.state(len(x) - 1)[name], b[name])
    for k, t in enumerate(x.tolist()):
        for layer in HIDDEN:
            name = f"{layer}.weight"
            expected = (1 - t) * a[name] + t * b[name]
            torch.testing.assert_close(path.state(k)[name], expected, rtol=1e-12, atol=1e-12)


# bfloat16 and mixed precision

# a few roundings' worth: random_symmetry's factors, normalization and its compensation
HALF_TOLERANCE = {dtype: 4 * torch.finfo(dtype).eps for dtype in (torch.bfloat16, torch.float16)}


def assert_close_relative(found: dict[str, Tensor], expected: dict[str, Tensor], tol: float):
    """Every tensor equal up to ``tol`` times its largest magnitude."""
    for name, value in expected.items():
        scale = float(value.double().abs().max()) or 1.0
        difference = float((found[name].double() - value.double()).abs().max())
        assert difference <= tol * scale, (name, difference, scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@given(seed=seeds, sym_seed=seeds, activation=st.sampled_from(["relu", "tanh"]))
def test_half_canonical_form_is_invariant(
    dtype: torch.dtype, seed: int, sym_seed: int, activation: str
) -> None:
    """In bfloat16 (which numpy cannot hold) and float16, a random symmetry of a
    network has the network's canonical form, up to the dtype's rounding."""
    model = mlp(activation, seed)
    spec = traced(model)
    a = {k: v.to(dtype) for k, v in state_of(model).items()}
    copy = random_symmetry(a, spec, seed=sym_seed, max_scale=2.0)
    expected = canonicalize(a, spec, reference=a)
    found = canonicalize(copy, spec, reference=a)
    assert all(v.dtype == dtype for v in found.values())
    assert_close_relative(found, expected, HALF_TOLERANCE[dtype])
    assert distances(a, copy, spec).geodesic < 0.1


@pytest.mark.parametrize("method", ["incoming", "weight"])
@pytest.mark.parametrize(
    ("low", "high"), [(torch.float16, torch.float32), (torch.bfloat16, torch.float64)]
)
def test_mixed_precision_pairs_match(low: torch.dtype, high: torch.dtype, method: str) -> None:
    """A half-precision network aligns to a full-precision reference (and back): the
    canonical form keeps the state's dtype and is the full-precision one, rounded."""
    model = mlp("relu", 5)
    spec = traced(model)
    full = {k: v.to(high) for k, v in state_of(model).items()}
    copy = random_symmetry(full, spec, seed=2, max_scale=2.0)
    half = {k: v.to(low) for k, v in copy.items()}
    found = canonicalize(half, spec, reference=full, method=method)
    assert all(v.dtype == low for v in found.values())
    assert_close_relative(found, canonicalize(full, spec), HALF_TOLERANCE[low])
    for one, other in ((half, full), (full, half)):
        assert distances(one, other, spec, method=method).geodesic < 0.05


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_similarities_are_solved_in_at_least_float32(dtype: torch.dtype) -> None:
    """Similarity matrices of any floating dtype are assigned, and the caller's matrix is
    left as it was."""
    assert working_dtype(dtype) in (torch.float32, torch.float64)
    assert working_dtype(dtype, torch.float64) == torch.float64
    perm = torch.tensor([2, 0, 3, 1])
    similarity = torch.eye(4)[perm].to(dtype)  # row k: 1 at column perm[k]
    kept = similarity.clone()
    assert torch.equal(solve_assignment(similarity), perm)
    assert torch.equal(similarity, kept)


def own_errors(model: nn.Module, state: dict[str, Tensor], x: Tensor, y: Tensor) -> float:
    """The error of ``state`` run by itself in its working dtype (at least float32)."""
    dtype = state_dtype(state)
    net = copy.deepcopy(model).to(dtype).eval()
    net.load_state_dict(state)
    with torch.no_grad():
        return float((net(x.to(dtype)).argmax(1) != y).double().mean())


PRECISIONS = [
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
    (torch.float64, torch.float64),
    (torch.float32, torch.bfloat16),
    (torch.float64, torch.float32),
]


@pytest.mark.parametrize(("first", "second"), PRECISIONS)
@pytest.mark.parametrize("batchnorm", [False, True])
def test_curves_of_any_precision_end_at_the_networks_errors(
    first: torch.dtype, second: torch.dtype, batchnorm: bool
) -> None:
    """Networks in half precision, double precision or a mix are evaluated along every
    path in their working dtype: the curves end exactly at each network's own error."""
    config = {"in_features": 6, "hidden": [8, 8], "classes": 4, "batchnorm": batchnorm}
    model = build_model("mlp", config)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 6, generator=gen), torch.randint(0, 4, (300,), generator=gen)
    a, b = (
        to_working(state_of(randomize(build_model("mlp", config), s, bn_eps=None)), "cpu", dtype)
        for s, dtype in ((1, first), (2, second))
    )
    for kind in ("linear", "linear_aligned", "geodesic"):
        curve = path_curve(a, b, model, (x, y), kind=kind, points=5, device="cpu", loss=True)
        assert curve.train_error[0] == own_errors(model, a, x, y), kind
        assert curve.train_error[-1] == own_errors(model, b, x, y), kind
        assert curve.train_loss is not None and all(math.isfinite(v) for v in curve.train_loss)


def test_pairs_of_several_precisions_in_one_call() -> None:
    """Pairs of different working dtypes evaluated together give each pair's own curve."""
    config = {"in_features": 6, "hidden": [8], "classes": 3}
    model = build_model("mlp", config)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 6, generator=gen), torch.randint(0, 3, (200,), generator=gen)
    states = [state_of(randomize(build_model("mlp", config), s)) for s in range(3)]
    pairs = [
        (states[0], states[1]),
        ({k: v.double() for k, v in states[1].items()}, states[2]),
        ({k: v.bfloat16() for k, v in states[2].items()}, states[0]),
    ]
    together = path_curves(pairs, model, (x, y), "geodesic", device="cpu")
    for (a, b), curve in zip(pairs, together, strict=True):
        alone = path_curve(a, b, model, (x, y), kind="geodesic", device="cpu")
        assert curve.train_error == alone.train_error
        assert curve.distances == alone.distances


def test_zoo_of_half_precision_entries(tmp_path: Path) -> None:
    """bfloat16 and float64 checkpoints enter a zoo with their errors measured, and
    compare with float32 ones."""
    config = {"in_features": 64, "hidden": [16], "classes": 10}
    zoo = Zoo.init(tmp_path / "zoo")
    for seed, dtype in enumerate((torch.bfloat16, torch.float64, torch.float32)):
        state = to_working(state_of(randomize(build_model("mlp", config), seed)), "cpu", dtype)
        entry = zoo.add(state, name=f"n{seed}", architecture="mlp", config=config, dataset="digits")
        assert 0 <= entry.metrics["train_error"] <= 1
    table = zoo.barrier_table(["n0", "n1", "n2"], path="geodesic", points=5, device="cpu")
    assert table.computed == 3
    assert all(0 <= v <= 1 for row in table.matrix for v in row)


# a per-unit tensor shared by two groups


class SharedScale(nn.Module):
    """One per-unit multiplier applied after two different hidden layers."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.w = nn.Parameter(torch.linspace(-1, 2, 8))

    def forward(self, x: Tensor) -> Tensor:
        """l3(relu(l2(relu(l1 x) w)) w)."""
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)) * self.w)) * self.w)


class ReusedScale(nn.Module):
    """One per-unit multiplier applied twice to the same units: one group, legitimate."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(6, 8), nn.Linear(8, 3)
        self.w = nn.Parameter(torch.linspace(-1, 2, 8))

    def forward(self, x: Tensor) -> Tensor:
        """l2(relu(l1 x) w + l1 x w)."""
        h = self.l1(x)
        return self.l2(F.relu(h) * self.w + h * self.w)


def test_tensor_shared_by_two_groups_is_refused() -> None:
    """Permuting `w` once per group would change the function: tracing refuses it,
    naming the tensor and both groups."""
    with pytest.raises(UnsupportedModuleError, match=r"`w`.*`l1` and `l2`"):
        traced(SharedScale())


def test_tensor_reused_within_one_group_is_kept() -> None:
    """A per-unit tensor used twice on the same units moves once, and the random
    symmetry keeps the function."""
    model = randomize(ReusedScale(), 3)
    spec = traced(model)
    (group,) = spec.groups
    assert [c.name for c in group.carried] == ["w"]
    a = state_of(model)
    x = torch.randn(16, 6, dtype=torch.float64)
    moved = random_symmetry(a, spec, seed=4, max_scale=1.0)
    torch.testing.assert_close(outputs(model, moved, x), outputs(model, a, x))


def _hand_spec(carried: dict[str, Any]) -> Spec:
    """Two hand-written groups that each carry the tensors in ``carried`` (name: start)."""
    groups = tuple(
        UnitGroup(
            name=layer,
            size=4,
            symmetry="scale",
            producers=(Producer(f"{layer}.weight"),),
            carried=tuple(CarriedAxis(name) for name in carried[layer]),
        )
        for layer in ("a", "b")
    )
    return Spec(groups, None)


def test_hand_written_spec_with_a_tensor_in_two_groups_is_rejected() -> None:
    """A spec whose two groups move the same tensor axis is invalid, however it was made."""
    with pytest.raises(SpecMismatchError, match="`shared`"):
        _hand_spec({"a": ["shared"], "b": ["shared"]})
    data = _hand_spec({"a": ["one"], "b": ["other"]}).to_dict()
    data["groups"][1]["carried"] = data["groups"][0]["carried"]
    with pytest.raises(SpecMismatchError, match="`one`"):
        Spec.from_dict(data)

"""Loss curves along paths between normalized networks (geodesic, bend) are the losses of
networks at their own output scale: their ends are the end networks' own losses, and the
error curves are those computed without losses, number for number."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from nets import randomize, state_of, traced
from torch import Tensor, nn

from canon.architectures import build_model
from canon.core import normalize
from canon.core.paths import geodesic_path, positions
from canon.data import load_dataset
from canon.engine import Evaluator, PathCurve, PathOptions, path_curve, path_curves

CPU = torch.device("cpu")
Data = tuple[Tensor, Tensor]

MLP = {"in_features": 6, "hidden": [8, 7], "classes": 3}
# a ReLU MLP, one with BatchNorm (eps kept: normalization exact up to its term), a tanh
# MLP and a single-output (sign) MLP, all float64
NETS: dict[str, tuple[dict[str, Any], float | None]] = {
    "relu": (MLP, 0.0),
    "batchnorm": ({**MLP, "batchnorm": True}, None),
    "tanh": ({**MLP, "activation": "tanh"}, 0.0),
    "sign-output": ({**MLP, "classes": 1}, 0.0),
}


def data_for(model: nn.Module, n: int = 300, seed: int = 0) -> Data:
    """Random inputs and labels (classes, or +-1 for a single output)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *model.input_shape), generator=gen, dtype=torch.float64)
    classes = model(x[:1]).shape[1]
    if classes == 1:
        return x, torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1
    return x, torch.randint(0, classes, (n,), generator=gen)


def own_loss(model: nn.Module, state: dict[str, Tensor], data: Data) -> float:
    """The network's mean cross-entropy by a plain forward pass of the module."""
    x, y = data
    model = copy.deepcopy(model)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        out = model(x)
    if out.shape[1] == 1:
        return float(F.softplus(-y * out[:, 0]).mean())
    return float(F.cross_entropy(out, y))


def networks(config: dict[str, Any], eps: float | None, seeds: tuple[int, ...]) -> list[Any]:
    """The template, then a random float64 state per seed."""
    model = randomize(build_model("mlp", config), 0, bn_eps=eps)
    return [model, *(state_of(randomize(copy.deepcopy(model), s, bn_eps=eps)) for s in seeds)]


def assert_ends_are_own_losses(
    curve: PathCurve, model: nn.Module, a: dict[str, Tensor], b: dict[str, Tensor], data: Data
) -> None:
    """The curve's first and last losses are a's and b's own (to float error)."""
    assert curve.train_loss is not None
    assert curve.train_loss[0] == pytest.approx(own_loss(model, a, data), rel=1e-6)
    assert curve.train_loss[-1] == pytest.approx(own_loss(model, b, data), rel=1e-6)


def assert_errors_without_loss(curve: PathCurve, **kwargs: Any) -> None:
    """The curve's errors are those of the same curve computed without losses, exactly."""
    plain = path_curve(**kwargs, loss=False)
    assert plain.train_loss is None
    assert curve.train_error == plain.train_error
    assert (curve.barrier, curve.excess) == (plain.barrier, plain.excess)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("kind", ["geodesic", "bend"])
def test_ends_of_normalized_paths_have_their_own_losses(name: str, kind: str) -> None:
    """Geodesic and bend losses at x = 0 and 1 are the end networks' own losses, at x = 0.5
    of a bend the midpoint's own (BN statistics interpolated, so the midpoint keeps its
    own), and the errors are those computed without losses."""
    config, eps = NETS[name]
    model, a, b, m = networks(config, eps, (1, 2, 3))
    data = data_for(model)
    kwargs = dict(a=a, b=b, model=model, data=data, kind=kind, points=5, device="cpu")
    kwargs["bn"] = "interpolate"
    curve = path_curve(**kwargs, midpoint=m, loss=True)
    assert_ends_are_own_losses(curve, model, a, b, data)
    if kind == "bend":
        assert curve.train_loss is not None
        assert curve.train_loss[2] == pytest.approx(own_loss(model, m, data), rel=1e-6)
    assert_errors_without_loss(curve, **kwargs, midpoint=m)


def test_geodesic_losses_on_digits_are_comparable_with_linear_ones() -> None:
    """On digits (float32), the geodesic's end losses are those of the linear path, which
    are the networks' own."""
    digits = load_dataset("digits")
    net = ("mlp", {"in_features": 64, "hidden": [16, 16]})
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        module = build_model(*net)
        for p in module.parameters():
            nn.init.normal_(p, std=0.3)
        states.append(state_of(module))
    a, b = states
    data = (digits.x_train, digits.y_train)
    kwargs = dict(a=a, b=b, model=net, data=digits, points=5, device="cpu")
    linear = path_curve(**kwargs, kind="linear", loss=True)
    geodesic = path_curve(**kwargs, kind="geodesic", loss=True)
    assert_ends_are_own_losses(geodesic, build_model(*net), a, b, data)
    assert geodesic.train_loss is not None and linear.train_loss is not None
    assert geodesic.train_loss[0] == pytest.approx(linear.train_loss[0], rel=1e-5)
    assert geodesic.train_loss[-1] == pytest.approx(linear.train_loss[-1], rel=1e-5)
    assert_errors_without_loss(geodesic, **kwargs, kind="geodesic")


@pytest.mark.parametrize("config", [MLP, {**MLP, "batchnorm": True}])
def test_pairs_evaluated_together_keep_their_own_scales(config: dict[str, Any]) -> None:
    """Several pairs' geodesics evaluated in one call (their points stacked across the
    pairs) each end at their own networks' losses."""
    model, *states = networks(config, None if config.get("batchnorm") else 0.0, (1, 2, 3, 4))
    data = data_for(model)
    pairs = [(states[0], states[1]), (states[2], states[3]), (states[1], states[2])]
    curves = path_curves(
        pairs, model, data, "geodesic", "cpu", options=PathOptions(points=5, loss=True)
    )
    for (a, b), curve in zip(pairs, curves, strict=True):
        assert_ends_are_own_losses(curve, model, a, b, data)
        alone = path_curve(a, b, model, data, "geodesic", points=5, device="cpu", loss=True)
        assert curve.train_error == alone.train_error
        assert curve.train_loss == pytest.approx(alone.train_loss, rel=1e-9)


@pytest.mark.parametrize("stacked", [True, False])
def test_output_scale_multiplies_the_logits_for_losses_only(stacked: bool) -> None:
    """An evaluator's losses with factors on a path's logits are those of the networks
    with their output layers scaled by the factors; the errors are unchanged."""
    model, a, b = networks(MLP, 0.0, (1, 2))
    spec = traced(model)
    x, y = data_for(model)
    na, nb = normalize(a, spec), normalize(b, spec)
    path = geodesic_path(na, nb, spec, positions(5))
    factors = torch.tensor([0.5, 1.0, 2.0, 3.0, 7.0], dtype=torch.float64)
    evaluator = Evaluator(model, x, y, CPU, batch_size=128)
    evaluator.stackable = stacked
    scaled = evaluator.evaluate(path, loss=True, output_scale=factors)
    plain = evaluator.evaluate(path, loss=True)
    assert torch.equal(scaled.errors, plain.errors)
    assert scaled.losses is not None
    for k, factor in enumerate(factors.tolist()):
        state = path.state(k)
        state["out.weight"] = state["out.weight"] * factor
        state["out.bias"] = state["out.bias"] * factor
        assert float(scaled.losses[k]) == pytest.approx(own_loss(model, state, (x, y)), rel=1e-9)


def test_binary_output_layer_keeps_its_losses() -> None:
    """A binary network's output layer acts through its weights' signs: normalization
    does not change its logits, so the geodesic's end losses are the networks' own (those
    of the random-flip path) and its errors unchanged."""
    config = {"in_features": 8, "hidden": [9], "classes": 3}
    model = randomize(build_model("binary_mlp", config), 0)
    a, b = state_of(randomize(model, 1)), state_of(randomize(model, 2))
    data = data_for(model)
    kwargs = dict(a=a, b=b, model=model, data=data, kind="geodesic", points=5, device="cpu")
    curve = path_curve(**kwargs, loss=True)
    flips = path_curve(a, b, model, data, "random_flip", points=5, device="cpu", loss=True)
    assert curve.train_loss is not None and flips.train_loss is not None
    assert curve.train_loss[0] == pytest.approx(flips.train_loss[0], rel=1e-9)
    assert curve.train_loss[-1] == pytest.approx(flips.train_loss[-1], rel=1e-9)
    assert_errors_without_loss(curve, **kwargs)


@given(
    seeds=st.tuples(st.integers(1, 10_000), st.integers(1, 10_000)),
    name=st.sampled_from(sorted(NETS)),
)
def test_geodesic_end_losses_over_seeds(seeds: tuple[int, int], name: str) -> None:
    """For any pair of random networks, the geodesic's end losses are their own losses
    and its errors those computed without losses."""
    config, eps = NETS[name]
    model, a, b = networks(config, eps, seeds)
    data = data_for(model, n=100, seed=seeds[0])
    kwargs = dict(a=a, b=b, model=model, data=data, kind="geodesic", points=3, device="cpu")
    curve = path_curve(**kwargs, loss=True)
    assert_ends_are_own_losses(curve, model, a, b, data)
    assert_errors_without_loss(curve, **kwargs)

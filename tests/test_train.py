"""Trainers (sgd, rsgd, adv, BinaryNet) and optimized single-bend midpoints."""

from __future__ import annotations

import pytest
import torch

from canon.core.geometry import distances
from canon.data import load_dataset, subset
from canon.engine import path_curve
from canon.engine.midpoint import optimize_midpoint
from canon.engine.train import train
from canon.errors import ConfigError

SMALL = ("mlp", {"in_features": 4, "hidden": [16], "classes": 3})


@pytest.fixture(scope="module")
def blobs():
    return load_dataset("gaussian", classes=3, dim=4, n_train=240, n_test=120, separation=4.0)


@pytest.fixture(scope="module")
def digits():
    return subset(load_dataset("digits"), limit_train=600)


def test_training_is_deterministic(blobs):
    """The same seed gives bit-identical weights; another seed gives other weights."""
    one = train(SMALL, blobs, "sgd", seed=3, epochs=5)
    two = train(SMALL, blobs, "sgd", seed=3, epochs=5)
    other = train(SMALL, blobs, "sgd", seed=4, epochs=5)
    assert all(torch.equal(one.state[k], two.state[k]) for k in one.state)
    assert not torch.equal(one.state["fc1.weight"], other.state["fc1.weight"])


def test_sgd_stops_at_the_target_and_reports_progress(blobs):
    """sgd stops as soon as the train error reaches the target; progress sees every epoch."""
    seen = []
    result = train(SMALL, blobs, "sgd", seed=0, epochs=200, target_error=0.05, progress=seen.append)
    assert result.train_error <= 0.05
    assert result.epochs < 200 and len(seen) == result.epochs
    assert [p.epoch for p in seen] == list(range(1, result.epochs + 1))
    assert seen[-1].train_error == result.train_error
    assert result.options["momentum"] == 0.9 and result.options["lr"] == 0.02
    assert result.test_error is not None


@pytest.mark.parametrize("algo", ["sgd", "rsgd", "adv"])
def test_each_algorithm_fits_digits(digits, algo):
    """sgd, rsgd and adv each reach train error < 1% on (a subset of) digits."""
    net = ("mlp", {"in_features": 64, "hidden": [64, 64], "classes": 10})
    result = train(net, digits, algo, seed=0, epochs=300)
    assert result.train_error < 0.01
    if algo == "adv":
        assert any(h["adv"] == 1.0 for h in result.history)
        assert result.options["momentum"] == 0.0
    if algo == "rsgd":
        assert result.options["replicas"] == 5 and result.options["gamma1"] > 0


def test_binary_committee_reaches_zero_error():
    """A binary committee machine trained with BinaryNet fits a small HMM exactly;
    latent weights stay in [-1, 1]; Hamming distances and random-flip paths work on it."""
    hmm = load_dataset("hmm", D=21, P=63, N=200, P_test=100)
    net = ("committee", {"in_features": 200, "hidden": 7})
    a = train(net, hmm, "sgd", seed=1, epochs=200)
    b = train(net, hmm, "sgd", seed=2, epochs=200)
    assert a.train_error == 0.0 and b.train_error == 0.0
    assert a.options["binary"] and a.options["momentum"] == 0.0
    assert a.state["hidden.weight"].abs().max() <= 1.0
    from canon.architectures import build_model
    from canon.core import spec_from_module

    spec = spec_from_module(build_model(*net))
    d = distances(a.state, b.state, spec)
    assert 0 < d.hamming_aligned <= d.hamming
    curve = path_curve(a.state, b.state, net, hmm, "random_flip", points=9, device="cpu", orders=3)
    assert curve.train_error[0] == 0.0 and curve.train_error[-1] == 0.0
    assert curve.barrier > 0


def test_optimized_midpoint_lowers_the_barrier(digits):
    """The trained midpoint reaches the target train error, and the bend barrier is at
    most the geodesic barrier between two sgd solutions."""
    net = ("mlp", {"in_features": 64, "hidden": [32, 32], "classes": 10})
    a = train(net, digits, "sgd", seed=1).state
    b = train(net, digits, "sgd", seed=2).state
    geodesic = path_curve(a, b, net, digits, "geodesic", points=13, device="cpu")
    result = optimize_midpoint(a, b, net, digits, "geodesic", points=13, target_error=0.0)
    assert result.train_error <= 0.0
    assert result.curve.kind == "bend"
    assert result.barrier <= geodesic.barrier
    linear = optimize_midpoint(a, b, net, digits, "linear", points=13)
    assert linear.curve.kind == "bend_linear" and linear.train_error == 0.0


def test_bad_training_requests(blobs):
    """Unknown algorithms, zero epochs, one replica and even point counts are rejected."""
    with pytest.raises(ConfigError, match="unknown algorithm `adam`"):
        train(SMALL, blobs, "adam")
    with pytest.raises(ConfigError, match="`epochs` must be at least 1"):
        train(SMALL, blobs, epochs=0)
    with pytest.raises(ConfigError, match="at least 2 replicas"):
        train(SMALL, blobs, "rsgd", replicas=1)
    state = train(SMALL, blobs, epochs=1).state
    with pytest.raises(ConfigError, match="must be odd"):
        optimize_midpoint(state, state, SMALL, blobs, points=10)

"""Trainers (sgd, rsgd, adv, BinaryNet) and optimized single-bend midpoints."""

from __future__ import annotations

import pytest
import torch

from canon.core.geometry import distances
from canon.data import load_dataset, subset
from canon.engine import path_curve
from canon.engine.midpoint import optimize_midpoint
from canon.engine.train import (
    PAPER_PROTOCOL,
    auto_gamma0,
    black_level,
    gamma_rate,
    replica_spread,
    train,
)
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


@pytest.mark.slow  # every epoch of the paper's protocol, 5 replicas for rsgd
@pytest.mark.parametrize("algo", ["sgd", "rsgd", "adv"])
def test_each_algorithm_fits_digits(digits, algo):
    """sgd, rsgd and adv each reach train error < 1% on (a subset of) digits, running every
    epoch (the paper's protocol)."""
    net = ("mlp", {"in_features": 64, "hidden": [64, 64], "classes": 10})
    result = train(net, digits, algo, seed=0, epochs=60, target_error=None)
    assert result.train_error < 0.01 and result.epochs == 60
    if algo == "adv":
        assert any(h["adv"] == 1.0 for h in result.history)
        assert result.options["momentum"] == 0.0
    if algo == "rsgd":
        assert result.options["replicas"] == 5
        assert result.options["gamma1"] == pytest.approx(1e4 ** (1 / 60) - 1)


def test_rsgd_replicas_start_apart_and_collapse_onto_the_center(blobs):
    """Independently initialized replicas run every epoch (no early stop) and end at the
    center: their spread shrinks from its initial value to near 0."""
    result = train(SMALL, blobs, "rsgd", seed=0, epochs=20, replicas=3, target_error=0.5)
    start, end = result.options["spread"]
    assert result.epochs == 20 and len(result.history) == 20
    assert start > 0.5 and end < 1e-3 * start
    spreads = [h["spread"] for h in result.history]
    assert spreads[-1] < spreads[0]
    assert result.options["gamma0_rule"] == "auto"


def test_automatic_gamma0_balances_coupling_and_data_loss(blobs):
    """gamma_0 = mean replica loss / mean squared distance to the center at initialization
    (checked against the replicas rebuilt from their seeds), and gamma_1 = 1e4^(1/epochs) - 1."""
    from canon.architectures import build_model
    from canon.engine.evaluate import Evaluator
    from canon.engine.train import _reset

    result = train(SMALL, blobs, "rsgd", seed=4, epochs=1, replicas=2)
    model = build_model(*SMALL)
    replicas = []
    for seed in (4, 4 * 7919 + 104_729):
        replica = build_model(*SMALL)
        _reset(replica, seed)
        replicas.append(replica)
    evaluator = Evaluator(model, blobs.x_train, blobs.y_train, torch.device("cpu"))
    losses = [float(evaluator.error(r.state_dict(), loss=True).losses[0]) for r in replicas]
    flat = [torch.cat([p.detach().flatten() for p in r.parameters()]) for r in replicas]
    center = (flat[0] + flat[1]) / 2
    distances = [float((f - center).square().sum()) for f in flat]
    expected = (sum(losses) / 2) / (sum(distances) / 2)
    assert result.options["gamma0"] == pytest.approx(expected, rel=1e-6)
    assert auto_gamma0(losses, distances) == pytest.approx(expected)
    assert replica_spread(replicas) == pytest.approx((sum(distances) / 2) ** 0.5, rel=1e-5)
    assert gamma_rate(300) == pytest.approx(1e4 ** (1 / 300) - 1)
    assert (1 + gamma_rate(300)) ** 300 == pytest.approx(1e4)
    with pytest.raises(ConfigError, match="give `gamma0`"):
        auto_gamma0([1.0, 1.0], [0.0, 0.0])


def test_adv_zeroes_raw_pixels_and_binary_nets_follow_appendix_b(digits):
    """adv's zeroed pixels are black (raw 0 = the feature's train minimum after
    standardization), not the mean; binary nets get appendix B's settings."""
    from canon.engine.train import _adversarial_copy

    x, y = digits.x_train, digits.y_train
    noisy, _ = _adversarial_copy(x, y, 0.25, seed=0)
    changed = noisy != x
    black = black_level(x).expand_as(x)
    assert changed.any() and torch.equal(noisy[changed], black[changed])
    assert "300" in PAPER_PROTOCOL and "cosine" in PAPER_PROTOCOL
    hmm = load_dataset("hmm", D=11, P=40, N=40, P_test=10)
    net = ("committee", {"in_features": 40, "hidden": 3})
    adv = train(net, hmm, "adv", seed=0, epochs=1, adv_epochs=1)
    assert (adv.options["lr"], adv.options["adv_lr"], adv.options["adv_zero_fraction"]) == (
        5.0,
        10.0,
        0.0,
    )
    rsgd = train(net, hmm, "rsgd", seed=0, epochs=2, replicas=2)
    assert (rsgd.options["gamma0"], rsgd.options["gamma1"]) == (0.002, 0.002)
    assert [h["gamma"] for h in rsgd.history] == pytest.approx([0.002, 0.002 * 1.002])


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
    linear = optimize_midpoint(a, b, net, digits, "linear", points=13, epochs=20)
    assert linear.curve.kind == "bend_linear" and linear.epochs == 20
    assert linear.options["target_error"] is None  # every epoch runs (Fig. 10)


def test_geodesic_midpoint_starts_at_the_endpoints_scale(digits):
    """Training starts from the geodesic midpoint put at the endpoints' scale: the same
    predictions as the geodesic's point at x = 0.5, each unit's scale and the output
    layer's norm the mean of the two endpoints' (with a learning rate of 0 the midpoint
    stays where it starts)."""
    from canon.architectures import build_model
    from canon.core import apply_alignment, match, normalize, spec_from_module, unit_scales

    net = ("mlp", {"in_features": 64, "hidden": [32, 32], "classes": 10})
    spec = spec_from_module(build_model(*net))
    a = train(net, digits, "sgd", seed=1, epochs=3).state
    b = train(net, digits, "sgd", seed=2, epochs=3).state
    start = optimize_midpoint(a, b, net, digits, "geodesic", points=13, epochs=1, lr=0.0).state
    norm_a, norm_b = normalize(a, spec), normalize(b, spec)
    alignment = match(norm_b, norm_a, spec)
    expected = unit_scales(a, spec).mean(unit_scales(apply_alignment(b, alignment, spec), spec))
    found = unit_scales(start, spec)
    assert found.groups.keys() == expected.groups.keys() == {g.name for g in spec.groups}
    for name, scales in expected.groups.items():
        torch.testing.assert_close(found.groups[name], scales, rtol=1e-5, atol=0)
    assert found.output == pytest.approx(expected.output, rel=1e-5)
    curve = path_curve(a, b, net, digits, "geodesic", points=13, device="cpu")
    model = build_model(*net).eval()
    model.load_state_dict(start)
    with torch.no_grad():
        wrong = int((model(digits.x_train).argmax(1) != digits.y_train).sum())
    assert wrong == round(curve.train_error[6] * len(digits.y_train))


def test_max_loss_stops_a_diverged_fit_and_changes_nothing_otherwise(blobs):
    """An epoch whose mean loss exceeds ``max_loss`` (or is not a number) stops the fit
    phase there, marked diverged; a cap never reached leaves the run bit for bit as it
    is without one."""
    plain = train(SMALL, blobs, "sgd", seed=3, epochs=4, target_error=None)
    capped = train(SMALL, blobs, "sgd", seed=3, epochs=4, target_error=None, max_loss=1e6)
    assert not plain.diverged and not capped.diverged and capped.epochs == 4
    assert all(torch.equal(plain.state[k], capped.state[k]) for k in plain.state)
    stopped = train(SMALL, blobs, "sgd", seed=3, epochs=4, target_error=None, max_loss=0.0)
    assert stopped.diverged and stopped.epochs == 1 and len(stopped.history) == 1
    assert stopped.options["max_loss"] == 0.0
    wild = train(SMALL, blobs, "sgd", seed=3, epochs=4, lr=1e30, target_error=None, max_loss=1e6)
    assert wild.diverged and wild.epochs < 4
    # adv's random-label phase is not the fit: its losses near chance do not stop it
    adv = train(SMALL, blobs, "adv", seed=3, epochs=2, adv_epochs=2, max_loss=1e6)
    assert not adv.diverged and [h["adv"] for h in adv.history].count(1.0) == 2


def test_divergence_loss_is_halfway_to_chance(blobs):
    """The cap is halfway from the start's own loss to the loss of constant outputs (ln C;
    ln 2 for one output), and never below the start's own loss."""
    import math

    from canon.architectures import build_model
    from canon.engine.landscape import as_data
    from canon.engine.midpoint import divergence_loss
    from canon.engine.train import loss_fn

    start = train(SMALL, blobs, "sgd", seed=0, epochs=30).state
    (x, y), _ = as_data(blobs)
    model = build_model(*SMALL).eval()
    model.load_state_dict(start)
    with torch.no_grad():
        own = float(loss_fn(model(x), y))
    assert own < math.log(3)
    assert divergence_loss(SMALL, start, blobs) == pytest.approx((own + math.log(3)) / 2)
    flat = {k: torch.zeros_like(v) if k.startswith("out") else v for k, v in start.items()}
    assert divergence_loss(SMALL, flat, blobs) == pytest.approx(math.log(3))
    worse = {k: -10 * v if k.startswith("out") else v for k, v in start.items()}
    with torch.no_grad():
        model.load_state_dict(worse)
        own_worse = float(loss_fn(model(x), y))
    assert own_worse > math.log(3)
    assert divergence_loss(SMALL, worse, blobs) == pytest.approx(own_worse)


def test_diverged_midpoint_training_restarts_at_half_the_rate(blobs):
    """A midpoint whose training diverges restarts from the same start at half the learning
    rate, at most ``lr_halvings`` times, the last try run to the end: the result is the
    plain protocol at the rate it reached. One that does not diverge is untouched."""
    a = train(SMALL, blobs, "sgd", seed=1, epochs=5).state
    b = train(SMALL, blobs, "sgd", seed=2, epochs=5).state
    calm = optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=3)
    plain = optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=3, lr_halvings=0)
    assert calm.restarts == 0 and calm.lr == 0.02
    assert all(torch.equal(calm.state[k], plain.state[k]) for k in calm.state)
    # at 64 the loss blows up; halved four times, at 4, it does not
    settled = optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=3, lr=64, lr_halvings=6)
    assert settled.restarts == 4 and settled.lr == 4 and settled.epochs == 3
    assert settled.options["lr"] == 64 and settled.options["lr_halvings"] == 6
    at_four = optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=3, lr=4, lr_halvings=0)
    assert all(torch.equal(settled.state[k], at_four.state[k]) for k in settled.state)
    # out of halvings: the last try (at 16) runs to the end whatever its loss
    spent = optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=3, lr=64, lr_halvings=2)
    assert spent.restarts == 2 and spent.lr == 16 and spent.epochs == 3
    at_16 = optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=3, lr=16, lr_halvings=0)
    assert all(torch.equal(spent.state[k], at_16.state[k]) for k in spent.state)
    with pytest.raises(ConfigError, match="`lr_halvings` must be at least 0"):
        optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=1, lr_halvings=-1)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="`lr` must be a finite number"):
            optimize_midpoint(a, b, SMALL, blobs, points=5, epochs=1, lr=bad)


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

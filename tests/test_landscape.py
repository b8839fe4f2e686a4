"""Error along paths, barriers, local energy and planes, evaluated by the engine."""

from __future__ import annotations

import copy
import itertools
import json
import weakref
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from nets import measure_batch_statistics, randomize, state_of, traced
from torch.utils._python_dispatch import TorchDispatchMode

from canon.architectures import build_model
from canon.core import normalize, random_symmetry, spec_from_module
from canon.core.paths import Combination, bend_path, geodesic_path, linear_path, positions
from canon.engine import (
    Evaluator,
    PathCurve,
    PathOptions,
    local_energy,
    path_curve,
    path_curves,
    plane,
    prepare_curves,
)
from canon.engine.batchnorm import with_recomputed_statistics
from canon.errors import ConfigError, NonFiniteError

CPU = torch.device("cpu")


def data_for(model, n=300, seed=0, binary=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *model.input_shape), generator=gen, dtype=torch.float64)
    if binary:
        y = torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1
    else:
        y = torch.randint(0, 3, (n,), generator=gen)
    return x, y


def own_error(model, state, data) -> float:
    """The network's error by a plain forward pass of the module (independent of the engine)."""
    x, y = data
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        out = model(x)
    wrong = torch.sign(out[:, 0]) != y if out.shape[1] == 1 else out.argmax(1) != y
    return float(wrong.double().mean())


MLP = {"in_features": 6, "hidden": [8, 7], "classes": 3}


@pytest.mark.parametrize("kind", ["linear", "linear_aligned", "geodesic", "bend"])
@pytest.mark.parametrize("arch", ["mlp", "lenet"])
def test_endpoints_reproduce_their_own_errors(kind, arch):
    """E(0) and E(1) equal each endpoint network's own error exactly."""
    config = (
        MLP
        if arch == "mlp"
        else {"input_size": 8, "padding": 2, "channels": [3, 4], "hidden": 5, "classes": 3}
    )
    model = randomize(build_model(arch, config), 0)
    a, b, m = (state_of(randomize(model, s)) for s in (1, 2, 3))
    data = data_for(model)
    curve = path_curve(a, b, model, data, kind, points=5, device="cpu", midpoint=m)
    assert curve.train_error[0] == own_error(model, a, data)
    assert curve.train_error[-1] == own_error(model, b, data)
    assert curve.barrier == max(curve.train_error)


def test_curves_through_one_template_equal_fresh_ones():
    """Curves of several pairs through one template module (which share its evaluator)
    are the curves each pair gets through a fresh module, train and test errors alike."""
    template = build_model("lenet", {"input_size": 8, "padding": 2, "channels": [3, 4],
                                     "hidden": 5, "classes": 3})  # fmt: skip
    states = [state_of(randomize(template, s)) for s in range(4)]
    train, test = data_for(template), data_for(template, n=50, seed=1)
    data = SimpleNamespace(x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1])
    pairs = list(itertools.pairwise(states))
    shared = [
        path_curve(a, b, template, data, "geodesic", points=5, device="cpu", test=True)
        for a, b in pairs
    ]
    for (a, b), curve in zip(pairs, shared, strict=True):
        fresh = copy.deepcopy(template)
        assert path_curve(a, b, fresh, data, "geodesic", points=5, device="cpu",
                          test=True).to_dict() == curve.to_dict()  # fmt: skip


def test_random_flip_endpoints_and_orders():
    """Random-flip paths: exact endpoints, mean and std over seeded orders, reproducible."""
    model = randomize(build_model("binary_mlp", {"in_features": 8, "hidden": [9], "classes": 1}), 0)
    a, b = state_of(randomize(model, 1)), state_of(randomize(model, 2))
    data = data_for(model, binary=True)
    curve = path_curve(a, b, model, data, "random_flip", points=7, device="cpu", orders=4, seed=5)
    assert curve.train_error[0] == own_error(model, a, data)
    assert curve.train_error[-1] == own_error(model, b, data)
    assert curve.train_error_std is not None and curve.train_error_std[0] == 0
    assert curve.barrier_std is not None and curve.options["orders"] == 4
    again = path_curve(a, b, model, data, "random_flip", points=7, device="cpu", orders=4, seed=5)
    assert again.train_error == curve.train_error
    aligned = path_curve(a, b, model, data, "random_flip_aligned", points=7, device="cpu")
    assert aligned.distances.hamming_aligned is not None


def test_symmetric_copy_has_flat_geodesic():
    """A permuted, rescaled copy: geodesic distance ~0, geodesic barrier = endpoint error."""
    model = randomize(build_model("mlp", MLP), 0)
    spec = traced(model)
    a = state_of(model)
    copy = random_symmetry(a, spec, seed=4)
    data = data_for(model)
    curve = path_curve(a, copy, model, data, "geodesic", points=9, device="cpu")
    assert curve.distances.geodesic < 1e-6
    assert curve.barrier == own_error(model, a, data)
    assert curve.excess == pytest.approx(0.0, abs=1e-12)


def test_fast_first_layer_matches_plain_evaluation():
    """Combining first-layer outputs from the path's bases gives the per-point errors and
    losses of running each network in full."""
    model = randomize(build_model("mlp", {"in_features": 200, "hidden": [16], "classes": 3}), 0)
    spec = traced(model)
    a = normalize(state_of(randomize(model, 1)), spec)
    b = normalize(state_of(randomize(model, 2)), spec)
    data = data_for(model, n=500)
    for path in (geodesic_path(a, b, spec, positions(9)), linear_path(a, b, positions(9))):
        fast = Evaluator(model, *data, CPU, batch_size=128)
        assert fast._fast([path]) is not None
        plain = Evaluator(model, *data, CPU, batch_size=128)
        plain.split = None
        got, expected = fast.evaluate(path, loss=True), plain.evaluate(path, loss=True)
        assert torch.equal(got.errors, expected.errors)
        torch.testing.assert_close(got.losses, expected.losses)


# small MLPs whose points run stacked: first layer from its bases, whole (tanh), with BN
STACKED_MLPS = [
    {"in_features": 200, "hidden": [16, 8], "classes": 3},
    {"in_features": 6, "hidden": [8, 7], "classes": 3, "activation": "tanh"},
    {"in_features": 40, "hidden": [12], "classes": 3, "batchnorm": True},
]


def _paths_of(config, sizes):
    """A float64 MLP of ``config``, 300 random inputs, and paths of every kind between
    random networks (linear, geodesic, bend, geodesic back) of ``sizes`` points, their BN
    statistics recomputed at interior points where the network has BN."""
    model = build_model("mlp", config).double()
    spec = traced(model)
    a, b, m = (state_of(randomize(copy.deepcopy(model), s, bn_eps=None)) for s in (1, 2, 3))
    na, nb = normalize(a, spec), normalize(b, spec)
    x, y = data_for(model, n=300)
    build = [
        lambda k: linear_path(a, b, positions(k)),
        lambda k: geodesic_path(na, nb, spec, positions(k)),
        lambda k: bend_path(na, normalize(m, spec), nb, spec, positions(k)),
        lambda k: geodesic_path(nb, na, spec, positions(k)),
    ]
    paths = [make(k) for make, k in zip(build, sizes, strict=False)]
    if config.get("batchnorm"):
        paths = [
            with_recomputed_statistics(p, model, x, range(1, len(p) - 1), 2, 64) for p in paths
        ]
    return model, x, y, paths


@pytest.mark.parametrize("config", STACKED_MLPS)
def test_stacked_points_equal_point_by_point(config):
    """A small network's points run stacked under one vmap give every point's error as
    running the points one by one (the loss to rounding), along every kind of path (also
    with BatchNorm statistics recomputed per point)."""
    model, x, y, paths = _paths_of(config, [9, 9, 9])
    for path in paths:
        stacked = Evaluator(model, x, y, CPU, batch_size=128)
        assert stacked.stackable and stacked._chunk(len(path), stacked.weights, True) > 1
        single = Evaluator(model, x, y, CPU, batch_size=128)
        single.stackable = False
        got, expected = stacked.evaluate(path, loss=True), single.evaluate(path, loss=True)
        assert stacked.stackable  # no fallback was needed
        assert torch.equal(got.errors, expected.errors)
        # batched products may sum in another order: the losses agree to rounding
        torch.testing.assert_close(got.losses, expected.losses, rtol=1e-12, atol=0)


@pytest.mark.parametrize("stacked", [True, False])
@pytest.mark.parametrize("config", STACKED_MLPS)
def test_paths_evaluated_together_equal_each_alone(config, stacked):
    """Several paths evaluated in one go (their points stacked across the paths'
    boundaries when the network is small) score every point as evaluating each path
    alone does (the loss to rounding)."""
    model, x, y, paths = _paths_of(config, [9, 5, 7, 9])
    together = Evaluator(model, x, y, CPU, batch_size=128)
    together.stackable = stacked
    if stacked:  # runs of points cross from one path into the next
        assert together.points_per_call() > 9
    got = together.evaluate_many(paths, loss=True)
    assert together.stackable == stacked  # no fallback was needed
    for path, scores in zip(paths, got, strict=True):
        alone = Evaluator(model, x, y, CPU, batch_size=128)
        alone.stackable = False
        expected = alone.evaluate(path, loss=True)
        assert torch.equal(scores.errors, expected.errors)
        torch.testing.assert_close(scores.losses, expected.losses, rtol=1e-12, atol=0)
    assert together.evaluate_many([]) == []


@given(sizes=st.lists(st.integers(1, 30), min_size=1, max_size=8), chunk=st.integers(1, 70))
def test_runs_cover_every_point_of_every_path_once_in_order(sizes, chunk):
    """The runs of several paths' points: each at most ``chunk`` points, numbered one
    after another, and their pieces name every point of every path once, in order."""
    from canon.engine.evaluate import _runs

    runs = _runs(sizes, chunk)
    assert [k for run, _ in runs for k in run] == list(range(sum(sizes)))
    assert all(len(run) <= chunk for run, _ in runs)
    assert all(sum(len(ks) for _, ks in pieces) == len(run) for run, pieces in runs)
    seen = [(p, k) for _, pieces in runs for p, ks in pieces for k in ks]
    assert seen == [(p, k) for p, n in enumerate(sizes) for k in range(n)]


@pytest.mark.parametrize("config", [MLP, {**MLP, "batchnorm": True}])
def test_curves_of_several_pairs_equal_each_pair_alone(config):
    """``path_curves`` of several pairs gives each pair's ``path_curve``, number for number."""
    model = randomize(build_model("mlp", config), 0, bn_eps=None)
    states = [state_of(randomize(copy.deepcopy(model), s, bn_eps=None)) for s in range(1, 5)]
    pairs = list(itertools.combinations(states, 2))
    data = data_for(model)
    options = PathOptions(points=7, bn_batches=2, bn_batch_size=64)
    together = path_curves(pairs, model, data, "geodesic", "cpu", options=options)
    for (a, b), curve in zip(pairs, together, strict=True):
        assert curve == path_curve(a, b, model, data, "geodesic", device="cpu", options=options)
    assert len({c.barrier for c in together}) > 1  # the pairs differ


def test_prepared_pairs_are_checked_unless_the_caller_did():
    """A pair with a NaN weight is refused before any path is made; a caller that checked
    its states against the spec (the zoo: they were loaded by ``load_state``) says so and
    they are not checked again, which needs that spec."""
    model = randomize(build_model("mlp", MLP), 0)
    spec = spec_from_module(model)
    a, b = state_of(model), state_of(randomize(copy.deepcopy(model), 1))
    bad = {**b, "fc2.weight": b["fc2.weight"].clone()}
    bad["fc2.weight"][0, 0] = float("nan")
    data = data_for(model)
    with pytest.raises(NonFiniteError, match=r"fc2\.weight"):
        prepare_curves([(a, bad)], model, data, "geodesic", "cpu", spec=spec)
    checked = prepare_curves([(a, b)], model, data, "geodesic", "cpu", spec=spec, checked=True)
    assert checked.evaluate() == path_curves([(a, b)], model, data, "geodesic", "cpu")
    with pytest.raises(ConfigError, match="needs the `spec`"):
        prepare_curves([(a, b)], model, data, "geodesic", "cpu", checked=True)


class _HostReads(TorchDispatchMode):
    """Counts the ops that read a value off a tensor's device (``item``, ``float``,
    ``bool``: a host sync on a GPU) and the tensor copies (to another device or dtype)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        self.copies += func is torch.ops.aten._to_copy.default
        return func(*args, **(kwargs or {}))


def test_a_curves_host_syncs_do_not_grow_with_its_points():
    """A curve reads values off the device and copies its coefficients a fixed number of
    times, whatever its points: none per point, per data batch or per BatchNorm layer
    (each would be a host sync on a GPU; a ResNet's statistics made thousands per pair)."""
    config = {**MLP, "batchnorm": True}
    model = randomize(build_model("mlp", config), 0, bn_eps=None).float()
    a, b = (state_of(randomize(build_model("mlp", config), s, bn_eps=None).float()) for s in (1, 2))
    data = data_for(model, n=300)
    counts = []
    for points in (5, 11):
        options = PathOptions(points=points, bn_batches=3, bn_batch_size=64)
        path_curve(a, b, model, data, "geodesic", device="cpu", options=options)  # warm
        with _HostReads() as seen:
            path_curve(a, b, model, data, "geodesic", device="cpu", options=options)
        counts.append((seen.reads, seen.copies))
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("turns", [False, True])
def test_pairs_prepared_in_threads_equal_one_at_a_time(monkeypatch, turns):
    """Pairs matched in threads (several at once, as on a machine of many cores; taking
    turns at launching ops or not, and sharing the networks' normal forms, which a thread
    may wait for while another makes them) give the curves of pairs prepared one at a
    time, number for number; a matching that runs the shared template stays in one
    thread."""
    import canon.engine.landscape as landscape

    model = randomize(build_model("mlp", MLP), 0)
    states = [state_of(randomize(copy.deepcopy(model), s)) for s in range(1, 6)]
    pairs = list(itertools.combinations(states, 2))
    data = data_for(model)
    options = PathOptions(points=5)
    monkeypatch.setattr(landscape, "PREPARE_THREADS", 1)
    alone = path_curves(pairs, model, data, "geodesic", "cpu", options=options)
    monkeypatch.setattr(landscape, "PREPARE_THREADS", 8)
    monkeypatch.setattr(landscape.os, "cpu_count", lambda: 16)
    monkeypatch.setitem(landscape.BATON, "cpu", turns)
    spec = spec_from_module(model)
    assert landscape._threads_for([None] * len(pairs), options, spec) == 8
    assert landscape._threads_for([None] * 3, PathOptions(method="activation"), spec) == 1
    assert path_curves(pairs, model, data, "geodesic", "cpu", options=options) == alone


class _Renormed(torch.nn.Module):
    """A small network with an op vmap runs sample by sample (``torch.renorm``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.out = torch.nn.Linear(6, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.renorm(torch.relu(self.fc1(x)), 2, 0, 1.0))


def test_a_network_vmap_runs_sample_by_sample_is_evaluated_point_by_point(monkeypatch):
    """Stacking a path's points is for speed: a network with an op vmap only runs through
    its per-sample fallback (a loop over the points) runs point by point instead, with
    the same errors."""
    import warnings

    import canon.engine.evaluate as evaluate_module

    monkeypatch.setitem(evaluate_module.STACK_WORK, "cpu", 1 << 62)
    torch.manual_seed(0)
    model = _Renormed()
    a, b = state_of(model), state_of(_Renormed())
    x, y = torch.randn(200, 6), torch.randint(0, 3, (200,))
    path = linear_path(a, b, positions(5))
    evaluator = Evaluator(model, x, y, CPU)
    assert evaluator.stackable and evaluator.points_per_call() > 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        errors = evaluator.evaluate(path).errors
    assert not evaluator.stackable and evaluator.points_per_call() == 1
    assert not seen  # the fallback's warning stopped the stacked run: it did not run on
    plain = [Evaluator(model, x, y, CPU).error(path.state(k)).errors for k in range(5)]
    assert torch.equal(errors, torch.cat(plain))


def test_data_batches_are_sized_by_their_activations(monkeypatch):
    """The rows of a data batch shrink until the activations of the networks in flight fit
    the evaluator's budget; errors do not depend on it."""
    import canon.engine.evaluate as evaluate_module

    model = build_model("lenet", {"input_size": 8, "padding": 2, "channels": [3, 4],
                                  "hidden": 5, "classes": 3}).double()  # fmt: skip
    a, b = (state_of(randomize(copy.deepcopy(model), s)) for s in (1, 2))
    x, y = data_for(model, n=300)
    path = linear_path(a, b, positions(5))
    whole = Evaluator(model, x, y, CPU).evaluate(path)
    row = Evaluator(model, x, y, CPU)._activation_bytes()
    assert row > x[0].numel() * 8  # the input's and every layer's outputs
    monkeypatch.setattr(evaluate_module, "ACTIVATION_BYTES", 20 * row)
    small = Evaluator(model, x, y, CPU)
    assert small.rows(1) == 20 and small.rows(4) == 5 and small.rows(10**6) == 1
    assert torch.equal(small.evaluate(path).errors, whole.errors)


@pytest.mark.parametrize("arch", ["mlp", "lenet"])
def test_points_too_large_to_keep_run_one_at_a_time_with_the_same_scores(monkeypatch, arch):
    """Where a path's points do not all fit in memory at once, each point is made once and
    run on every data batch in turn (instead of made anew for every batch): the errors and
    losses are those of the batch-by-batch order, number for number."""
    import canon.engine._modules as modules

    config = MLP if arch == "mlp" else {"input_size": 8, "padding": 2, "channels": [3, 4],
                                        "hidden": 5, "classes": 3}  # fmt: skip
    model = build_model(arch, config).double()
    a, b = (state_of(randomize(copy.deepcopy(model), s)) for s in (1, 2))
    x, y = data_for(model, n=300)
    paths = [linear_path(a, b, positions(4)), geodesic_path(a, b, traced(model), positions(3))]
    kept = Evaluator(model, x, y, CPU, batch_size=64)
    kept.stackable = False  # both orders point by point
    expected = [kept.evaluate_many(paths, loss=True), kept.evaluate_many(paths)]
    made: list[int] = []
    held: list[weakref.ref[torch.Tensor]] = []  # the tensors of the point being made
    alive_at_next: list[int] = []  # how many of a point's tensors live when the next starts
    at = Combination.at

    def spy(rule: Combination, k: int) -> torch.Tensor:
        if not made or k != made[-1]:  # the first tensor of the next point
            alive_at_next.append(sum(r() is not None for r in held))
            held.clear()
        made.append(k)
        tensor = at(rule, k)
        held.append(weakref.ref(tensor))
        return tensor

    monkeypatch.setattr(Combination, "at", spy)
    monkeypatch.setattr(modules, "POINTS_TOGETHER_BYTES", 0)
    one_at_a_time = Evaluator(model, x, y, CPU, batch_size=64)
    one_at_a_time.stackable = False
    for loss, scores in zip((True, False), expected, strict=True):
        got = one_at_a_time.evaluate_many(paths, loss=loss)
        for g, e in zip(got, scores, strict=True):
            assert torch.equal(g.errors, e.errors)
            assert (g.losses is None) == (e.losses is None)
            assert g.losses is None or torch.equal(g.losses, e.losses)
    assert len(made) == 2 * 7 * len(paths[0].tensors)  # each point made once per evaluation
    assert len(alive_at_next) == 2 * 7 and set(alive_at_next) == {0}  # one point at a time


def test_batchnorm_recomputed_at_an_endpoint_reproduces_its_error():
    """For a BN net whose statistics were measured on the training data, recomputing them
    at the endpoint on the same batches gives the same statistics and the same error."""
    model = randomize(build_model("mlp", {**MLP, "batchnorm": True}), 0, bn_eps=None)
    x, y = data_for(model, n=256)
    measure_batch_statistics(model, x, 64)
    a = state_of(model)
    b = state_of(randomize(build_model("mlp", {**MLP, "batchnorm": True}), 1, bn_eps=None))
    path = linear_path(a, b, positions(3))
    redone = with_recomputed_statistics(path, model, x, [0], batches=4, batch_size=64)
    for name in ("bn1.running_mean", "bn1.running_var", "bn2.running_var"):
        torch.testing.assert_close(redone.tensors[name].at(0), a[name])
    evaluator = Evaluator(model, x, y, CPU)
    assert float(evaluator.evaluate(redone).errors[0]) == own_error(model, a, (x, y))
    curve = path_curve(
        a, b, model, (x, y), "geodesic", points=5, device="cpu", bn_batches=2, bn_batch_size=64
    )
    assert curve.options["bn"] == "recompute" and curve.options["bn_batches"] == 2
    assert curve.train_error[0] == own_error(model, a, (x, y))


def test_a_curve_leaves_the_callers_module_and_networks_as_they_were():
    """The evaluator and the BN recomputation run the caller's module through working
    copies that share its tensors (no copy of a parameter is made) and never write into
    them: after a BN net's curve the module and both endpoints are byte-for-byte as
    given, down to the batch counters."""
    from canon.engine._modules import working_copy

    config = {**MLP, "batchnorm": True}
    model = randomize(build_model("mlp", config), 0, bn_eps=None)
    x, y = data_for(model, n=128)
    a = state_of(model)
    b = state_of(randomize(build_model("mlp", config), 1, bn_eps=None))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [(m.training, getattr(m, "momentum", None)) for m in model.modules()]
    given = [{k: v.clone() for k, v in s.items()} for s in (a, b)]
    copy_ = working_copy(model, CPU)
    assert copy_ is not model and copy_.bn1 is not model.bn1
    assert copy_.fc1.weight.data_ptr() == model.fc1.weight.data_ptr()
    for kind in ("linear", "geodesic"):
        path_curve(a, b, model, (x, y), kind, points=4, device="cpu", bn_batches=2)
    assert [(m.training, getattr(m, "momentum", None)) for m in model.modules()] == modes
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    for state, original in zip((a, b), given, strict=True):
        assert all(torch.equal(state[k], original[k]) for k in original)


def test_plane_recomputes_batchnorm_statistics_at_every_point():
    """On a BN net's plane no stored statistics are used: a's running statistics can be
    anything and the errors stay the same; with statistics measured on the data used, the
    corner at a has a's own error; the options record it."""
    config = {**MLP, "batchnorm": True}
    model = randomize(build_model("mlp", config), 0, bn_eps=None)
    x, y = data_for(model, n=256)
    a, b, c = (state_of(randomize(build_model("mlp", config), s, bn_eps=None)) for s in (1, 2, 3))
    c["out.bias"] = b["out.bias"] + 1.0
    kwargs = {"grid": 3, "margin": 0.0, "device": "cpu", "bn_batches": 4, "bn_batch_size": 64}
    result = plane(a, b, c, model, (x, y), **kwargs)
    assert result.options == {
        "grid": 3,
        "margin": 0.0,
        "bn": "recompute",
        "bn_batches": 4,
        "bn_batch_size": 64,
    }
    spoiled = dict(a)
    for name in ("bn1.running_mean", "bn1.running_var", "bn2.running_mean"):
        spoiled[name] = torch.full_like(a[name], 50.0)
    assert plane(spoiled, b, c, model, (x, y), **kwargs).errors == result.errors
    redone = with_recomputed_statistics(linear_path(a, b, positions(3)), model, x, [0], 4, 64)
    evaluator = Evaluator(model, x, y, CPU)
    assert result.errors[0][0] == float(evaluator.evaluate(redone).errors[0])


def test_path_curve_json_round_trip():
    """PathCurve serializes to JSON and back."""
    model = randomize(build_model("mlp", MLP), 0)
    a, b = state_of(randomize(model, 1)), state_of(randomize(model, 2))
    curve = path_curve(a, b, model, data_for(model), "linear", points=5, device="cpu", loss=True)
    back = PathCurve.from_dict(json.loads(curve.to_json()))
    assert back == curve
    assert len(back.train_loss) == 5


def test_test_error_needs_a_test_split():
    """test=True reports the test error along the path, given a dataset with a test split."""
    from canon.data import load_dataset

    ds = load_dataset("gaussian", classes=3, dim=4, n_train=120, n_test=60)
    model = build_model("mlp", {"in_features": 4, "hidden": [5], "classes": 3})
    a, b = state_of(randomize(model, 1)), state_of(randomize(model, 2))
    a = {k: v.float() for k, v in a.items()}
    b = {k: v.float() for k, v in b.items()}
    curve = path_curve(a, b, model.float(), ds, "geodesic", points=3, device="cpu", test=True)
    assert len(curve.test_error) == 3
    with pytest.raises(ConfigError, match="test split"):
        path_curve(
            a, b, model, (ds.x_train, ds.y_train), "linear", points=3, device="cpu", test=True
        )


def test_bad_path_requests():
    """Unknown kinds, a bend without midpoint and flips on real weights are clear errors."""
    model = randomize(build_model("mlp", MLP), 0)
    a, b = state_of(randomize(model, 1)), state_of(randomize(model, 2))
    data = data_for(model)
    with pytest.raises(ConfigError, match="unknown path kind `curvy`"):
        path_curve(a, b, model, data, "curvy", device="cpu")
    with pytest.raises(ConfigError, match="needs a `midpoint`"):
        path_curve(a, b, model, data, "bend", device="cpu")
    with pytest.raises(ConfigError, match="binary weights"):
        path_curve(a, b, model, data, "random_flip", device="cpu")
    with pytest.raises(ConfigError, match="must be an"):
        path_curve(a, b, model, "digits", "linear", device="cpu")


def test_local_energy():
    """Local energy: zero at sigma 0, reproducible per seed, grows with sigma; binary flips."""
    model = randomize(build_model("mlp", MLP), 0)
    a = state_of(model)
    data = data_for(model)
    le = local_energy(a, model, data, sigmas=[0.0, 0.5, 2.0], draws=3, seed=1, device="cpu")
    assert le.mean[0] == 0 and le.std[0] == 0
    assert le.mean[2] > le.mean[0]
    assert local_energy(a, model, data, sigmas=[0.0, 0.5, 2.0], draws=3, seed=1, device="cpu") == le
    binary = randomize(build_model("committee", {"in_features": 8, "hidden": 5}), 0)
    energy = local_energy(
        state_of(binary), binary, data_for(binary, binary=True), [0.0, 0.5], 3, device="cpu"
    )
    assert energy.options["binary"] and energy.mean[0] == 0


def test_plane_errors_at_the_anchors():
    """With no margin, a sits on the grid's first corner and the error there is a's."""
    model = randomize(build_model("mlp", MLP), 0)
    a, b = state_of(randomize(model, 1)), state_of(randomize(model, 2))
    c = {k: v.clone() for k, v in b.items()}
    c["out.bias"] = c["out.bias"] + 1.0
    data = data_for(model)
    result = plane(a, b, c, model, data, grid=4, margin=0.0, device="cpu")
    assert len(result.errors) == 4 and len(result.errors[0]) == 4
    assert result.anchors[0] == [0.0, 0.0]
    assert result.alphas[0] == 0.0 and result.betas[0] == 0.0  # c lies beyond a along b - a
    assert result.errors[0][0] == own_error(model, a, data)
    normalized = plane(a, b, c, model, data, grid=3, normalized=True, device="cpu")
    assert normalized.normalized

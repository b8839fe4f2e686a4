"""Comparisons and pairwise tables over a zoo, the pair cache, and manifests."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from zoos import copy_zoo

from canon._format import pct
from canon.architectures import build_model
from canon.data import load_dataset, subset
from canon.engine import train
from canon.errors import ConfigError, CorruptZooError, NotCachedError
from canon.zoo import Zoo

NET = ("mlp", {"in_features": 64, "hidden": [12], "classes": 10})
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def solutions():
    digits = subset(load_dataset("digits"), limit_train=300)
    return [train(NET, digits, "sgd", seed=s, epochs=40).state for s in range(5)]


@pytest.fixture(scope="module")
def template(tmp_path_factory, solutions):
    """A closed zoo of the first four solutions (evaluated on digits when added), built once."""
    root = tmp_path_factory.mktemp("analysis") / "template"
    with Zoo.open(root) as z:
        for i, state in enumerate(solutions[:4]):
            z.add(
                state,
                name=f"net-{i}",
                architecture=NET[0],
                config=NET[1],
                dataset="digits",
                tags={"algo": "sgd"},
            )
    return root


@pytest.fixture
def zoo(tmp_path, template):
    """A fresh copy of the template zoo for each test (tests add entries and cache pairs)."""
    z = copy_zoo(template, tmp_path / "zoo")
    yield z
    z.close()


def test_table_computes_only_new_pairs(zoo, solutions):
    """A cached table computes nothing; one more entry costs exactly N new pairs."""
    first = zoo.barrier_table(points=5, device="cpu")
    assert first.computed == 6 and first.matrix.shape == (4, 4)
    assert np.allclose(first.matrix, first.matrix.T) and np.all(np.diag(first.matrix) == 0)
    again = zoo.barrier_table(points=5, device="cpu")
    assert again.computed == 0 and np.array_equal(again.matrix, first.matrix)
    zoo.add(solutions[4], name="net-4", architecture=NET[0], config=NET[1], dataset="digits")
    bigger = zoo.barrier_table(points=5, device="cpu")
    assert bigger.computed == 4
    assert np.array_equal(bigger.matrix[:4, :4], first.matrix)
    reopened = Zoo.open(zoo.root)
    assert reopened.barrier_table(points=5, device="cpu").computed == 0


def test_a_cached_table_needs_no_architecture_code(tmp_path, monkeypatch):
    """Once a table of a `module:function` family is cached, a later session answers it
    from the cache without importing that module: it may have moved, and a zoo opened
    without trust runs none of its code."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "table_net.py").write_text(
        "from canon.architectures import build_model\n\n\n"
        "def net():\n"
        "    return build_model('mlp', {'in_features': 64, 'hidden': [6], 'classes': 10})\n"
    )
    monkeypatch.syspath_prepend(str(mods))
    with Zoo.open(tmp_path / "zoo") as zoo:
        for seed in range(3):
            torch.manual_seed(seed)
            state = build_model("table_net:net", {}).state_dict()
            zoo.add(state, name=f"n{seed}", architecture="table_net:net", config={},
                    dataset="digits", evaluate=False)  # fmt: skip
        first = zoo.barrier_table(points=3, device="cpu")
    assert first.computed == 3
    (mods / "table_net.py").unlink()
    monkeypatch.delitem(sys.modules, "table_net")
    with Zoo.open(tmp_path / "zoo") as zoo:
        again = zoo.barrier_table(points=3, device="cpu")
    assert again.computed == 0 and np.array_equal(again.matrix, first.matrix)
    assert "table_net" not in sys.modules


def test_table_options_are_part_of_the_key(zoo):
    """Other points or another metric family are computed afresh, not served stale."""
    zoo.barrier_table(["net-0", "net-1"], points=5, device="cpu")
    assert zoo.barrier_table(["net-0", "net-1"], points=7, device="cpu").computed == 1
    geo = zoo.barrier_table(["net-0", "net-1"], metric="geodesic", device="cpu")
    assert geo.computed == 1 and geo.path is None and geo.matrix[0, 1] > 0
    assert (
        zoo.barrier_table(["net-1", "net-0"], metric="excess", points=5, device="cpu").computed == 0
    )


def test_cache_only_requests_compute_nothing(zoo):
    """With compute=False: NaN or NotCachedError where nothing is cached, the cached values
    once they are, and invalid requests still rejected."""
    table = zoo.barrier_table(["net-0", "net-1", "net-2"], points=5, device="cpu", compute=False)
    assert np.isnan(table.matrix[0, 1]) and table.computed == 0 and zoo.pair_computations == 0
    with pytest.raises(NotCachedError):
        zoo.compare("net-0", "net-1", points=5, device="cpu", compute=False)
    assert zoo.pair_computations == 0
    computed = zoo.barrier_table(["net-0", "net-1"], points=5, device="cpu")
    partial = zoo.barrier_table(["net-0", "net-1", "net-2"], points=5, compute=False)
    assert partial.matrix[0, 1] == computed.matrix[0, 1] and np.isnan(partial.matrix[0, 2])
    cmp = zoo.compare("net-1", "net-0", points=5, device="cpu")
    assert zoo.compare("net-1", "net-0", points=5, compute=False) == cmp
    torch.manual_seed(0)
    other = {"in_features": 64, "hidden": [8], "classes": 10}
    zoo.add(build_model("mlp", other).state_dict(), name="narrow", architecture="mlp",
            config=other, dataset="digits")  # fmt: skip
    with pytest.raises(ConfigError, match=r"2 families: 1 of mlp \w+ \(net-0\); 1 of mlp"):
        zoo.barrier_table(["net-0", "narrow"], points=5, compute=False)
    with pytest.raises(ConfigError):
        zoo.barrier_table(["net-0", "net-1"], path="bend", compute=False)


def test_table_serializations(zoo):
    """to_json, to_csv and to_dict carry the names and the matrix."""
    table = zoo.barrier_table(["net-0", "net-1", "net-2"], points=5, device="cpu")
    data = json.loads(table.to_json())
    assert data["names"] == ["net-0", "net-1", "net-2"] and data["metric"] == "barrier"
    lines = table.to_csv().strip().splitlines()
    assert lines[0] == ",net-0,net-1,net-2" and lines[1].startswith("net-0,0,")
    text = str(table).splitlines()  # as `canon table` prints it
    assert text[0] == "barrier" and text[1].split() == ["0", "1", "2"]
    assert text[3].split() == ["net-1", *(pct(v) for v in table.matrix[1]), "[1]"]


def test_compare_is_cached_and_oriented(zoo):
    """compare(a, b) and compare(b, a) share cached results, each curve oriented from a."""
    ab = zoo.compare("net-0", "net-1", points=5, device="cpu")
    before = zoo.pair_computations
    ba = zoo.compare("net-1", "net-0", points=5, device="cpu")
    assert zoo.pair_computations == before
    for kind in ("linear", "linear_aligned", "geodesic"):
        assert ba.curves[kind].train_error == list(reversed(ab.curves[kind].train_error))
        assert ba.curves[kind].barrier == ab.curves[kind].barrier
        assert ab.curves[kind].train_error[0] == pytest.approx(
            zoo["net-0"].metrics.get("train_error", ab.curves[kind].train_error[0])
        )
    assert ab.distances == ba.distances
    assert json.loads(json.dumps(ab.to_dict()))["a"] == "net-0"
    shown = str(ab).splitlines()  # as `canon compare` prints it
    assert shown[:2] == ["net-0 vs net-1", "distances:"]
    assert shown[-1].split() == [
        "geodesic",
        pct(ab.curves["geodesic"].barrier),
        pct(ab.curves["geodesic"].excess),
    ]
    again = zoo.compare("net-0", "net-1", points=5, device="cpu")  # from the cache
    assert json.dumps(again.to_dict()) == json.dumps(ab.to_dict())  # printed alike, key order too


def test_bad_requests(zoo, tmp_path):
    """Unknown metrics and kinds, and mixed families, are clear errors."""
    with pytest.raises(ConfigError, match="unknown metric"):
        zoo.barrier_table(metric="height")
    with pytest.raises(ConfigError, match="cannot be compared directly"):
        zoo.compare("net-0", "net-1", paths=["bend"])
    other = ("mlp", {"in_features": 64, "hidden": [13], "classes": 10})
    from canon.architectures import build_model

    zoo.add(
        build_model(*other), name="odd", architecture=other[0], config=other[1], dataset="digits"
    )
    before = zoo.pair_computations
    with pytest.raises(ConfigError, match=r"of 2 families: .*\(odd\)\. A table compares"):
        zoo.barrier_table(points=5, device="cpu")  # every entry: two families
    with pytest.raises(ConfigError, match="different architectures"):
        zoo.compare("net-0", "odd", points=5, device="cpu")
    assert zoo.pair_computations == before


def test_manifest_rebuilds_the_index(zoo, tmp_path):
    """A zoo folder with only manifest.json and objects/ gets its index rebuilt on open,
    with the same entries, tags, metrics and references."""
    zoo.set_reference("net-2")
    zoo.write_manifest()
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(zoo.root / "manifest.json", copy / "manifest.json")
    shutil.copytree(zoo.root / "objects", copy / "objects")
    rebuilt = Zoo.open(copy)
    assert [e.name for e in rebuilt.entries()] == [e.name for e in zoo.entries()]
    for e in zoo.entries():
        r = rebuilt[e.name]
        assert (r.id, r.tags, r.dataset, r.family) == (e.id, e.tags, e.dataset, e.family)
    assert rebuilt.reference("net-0").name == "net-2"


def test_manifest_with_missing_object_leaves_no_index(zoo, tmp_path):
    """A manifest naming a missing object is an error, and no half-built index remains."""
    zoo.write_manifest()
    copy = tmp_path / "broken"
    copy.mkdir()
    shutil.copy(zoo.root / "manifest.json", copy / "manifest.json")
    with pytest.raises(CorruptZooError, match="is missing"):
        Zoo.open(copy)
    assert not (copy / "canon.sqlite").exists()


def test_embedded_default_zoo_manifest():
    """The committed default zoo lists nine digits MLPs from sgd, rsgd and adv, and every
    listed object is committed."""
    data = json.loads((ROOT / "zoo" / "manifest.json").read_text())
    entries = data["entries"]
    assert len(entries) == 9
    assert sorted({e["tags"]["algo"] for e in entries}) == ["adv", "rsgd", "sgd"]
    assert all(e["dataset"] == "digits" and e["metrics"]["train_error"] < 0.01 for e in entries)
    for e in entries:
        assert (ROOT / "zoo" / e["object"]).is_file()


def test_add_records_errors_on_a_known_dataset(zoo, solutions):
    """Adding with a dataset that loads records train and test error; a network that cannot
    run on that dataset is rejected and nothing is added."""
    entry = zoo["net-0"]
    assert entry.metrics["train_error"] < 0.2 and "test_error" in entry.metrics
    wrong = ("mlp", {"in_features": 8, "hidden": [4], "classes": 10})
    from canon.architectures import build_model

    before = [e.name for e in zoo.entries()]
    with pytest.raises(ConfigError, match="does not run on dataset `digits`"):
        zoo.add(
            build_model(*wrong),
            name="wrong",
            architecture=wrong[0],
            config=wrong[1],
            dataset="digits",
        )
    assert [e.name for e in zoo.entries()] == before
    kept = zoo.add(
        solutions[4],
        name="given",
        architecture=NET[0],
        config=NET[1],
        dataset="digits",
        metrics={"train_error": 0.5},
    )
    assert kept.metrics == {"train_error": 0.5}


def test_edit_measures_errors_on_the_new_dataset(zoo, tmp_path):
    """A new dataset replaces the entry's train and test errors by those on the new data;
    data that is not here drops them; data the network cannot run on is refused with
    nothing changed."""
    import numpy as np

    from canon.data import load_dataset

    digits = load_dataset("digits")
    x, y = digits.x_train.numpy(), digits.y_train.numpy()
    other = tmp_path / "other.npz"
    np.savez(other, x=x[100:400], y=y[100:400], x_test=x[:100], y_test=y[:100])
    zoo.edit("net-1", tags={"note": "kept"})
    before = zoo["net-1"].metrics
    entry = zoo.edit("net-1", dataset=f"npz:{other}", device="cpu")
    data = load_dataset(f"npz:{other}")
    fresh = zoo.model("net-1")
    fresh.load_state_dict(zoo.state("net-1"))
    with torch.no_grad():
        wrong = fresh.eval()(data.x_train).argmax(1) != data.y_train
    want = float(wrong.double().mean())
    assert entry.metrics["train_error"] == pytest.approx(want, abs=1e-12)
    assert entry.metrics != before and entry.tags["note"] == "kept"
    gone = zoo.edit("net-1", dataset=f"npz:{tmp_path / 'elsewhere.npz'}")
    assert "train_error" not in gone.metrics and "test_error" not in gone.metrics
    np.savez(other, x=x[:300, :10], y=y[:300], x_test=x[:100, :10], y_test=y[:100])
    with pytest.raises(ConfigError, match="does not run on dataset"):
        zoo.edit("net-1", dataset=f"npz:{other}", rename="renamed")
    assert zoo["net-1"] == gone


def test_normalized_forms_are_cached(zoo):
    """zoo.normalized returns the normalized state, served from memory the second time,
    and callers cannot corrupt the cache by editing what they got."""
    from canon.core import normalize

    first = zoo.normalized("net-0")
    expected = normalize(zoo.state("net-0"), zoo.spec("net-0"))
    assert all(first[k].equal(expected[k]) for k in expected)
    first["fc1.weight"] = first["fc1.weight"] * 0
    again = zoo.normalized("net-0")
    assert again["fc1.weight"].equal(expected["fc1.weight"])


def test_curve_cache_key_changes_with_every_path_option() -> None:
    """Each field of the path options record (and the kind and dataset) is in the cache key,
    so a changed option or default can never be served a stale result."""
    import dataclasses

    from canon.engine import PathOptions
    from canon.zoo._analysis import curve_key

    base = PathOptions()
    key = curve_key("geodesic", "digits", base)
    assert set(base.to_dict()) == {f.name for f in dataclasses.fields(PathOptions)}
    changed = {
        "points": 9, "bn": "interpolate", "bn_batches": 3, "bn_batch_size": 32, "orders": 2,
        "seed": 1, "loss": True, "test": True, "method": "weight", "match_batch": 64,
    }  # fmt: skip
    assert set(changed) == set(base.to_dict())
    keys = {curve_key("geodesic", "digits", dataclasses.replace(base, **{k: v}))
            for k, v in changed.items()}  # fmt: skip
    assert key not in keys and len(keys) == len(changed)
    assert curve_key("linear", "digits", base) != key
    assert curve_key("geodesic", "gaussian", base) != key


def test_bend_curves_are_cached_per_midpoint(zoo, solutions):
    """A bend curve is computed once per (pair, midpoint); another midpoint is a miss."""
    zoo.add(solutions[4], name="m", architecture=NET[0], config=NET[1], dataset="digits",
            tags={"path": "linear"})  # fmt: skip
    ab = zoo.bend_curve("net-0", "net-1", "m", points=5, device="cpu")
    assert ab.kind == "bend_linear"
    before = zoo.pair_computations
    ba = zoo.bend_curve("net-1", "net-0", "m", points=5, device="cpu")
    assert zoo.pair_computations == before
    assert ba.train_error == list(reversed(ab.train_error))
    zoo.bend_curve("net-0", "net-1", "net-2", points=5, device="cpu")
    zoo.bend_curve("net-0", "net-1", "net-3", points=5, device="cpu")
    assert zoo.pair_computations == before + 2


def test_matching_method_is_part_of_the_key(zoo):
    """Another matching method is computed afresh and recorded with the result."""
    auto = zoo.compare("net-0", "net-1", paths=["geodesic"], points=5, device="cpu")
    assert auto.curves["geodesic"].options["method"] == "incoming"  # a chain network
    before = zoo.pair_computations
    again = zoo.compare("net-0", "net-1", paths=["geodesic"], points=5, method="incoming")
    assert zoo.pair_computations == before and again == auto
    weight = zoo.compare("net-0", "net-1", paths=["geodesic"], points=5, method="weight")
    assert zoo.pair_computations == before + 2  # distances and the curve
    assert weight.curves["geodesic"].options["method"] == "weight"
    with pytest.raises(ConfigError, match=r"unknown matching method `wieght`.*weight"):
        zoo.compare("net-0", "net-1", points=5, method="wieght")


def test_cached_metrics_equal_the_whole_results(zoo):
    """A table reads each pair's metric alone from SQLite (``->``), the number json gives
    for the whole result; an SQLite without ``->`` gets the same from whole results."""
    import sqlite3

    from canon.zoo._answers import cached_metrics

    table = zoo.barrier_table(points=5, device="cpu", metric="barrier")
    ids = [e.id for e in zoo.entries()]
    with sqlite3.connect(zoo.root / "canon.sqlite") as con:
        rows = con.execute("SELECT entry_a, entry_b, options_hash, result FROM pair_cache")
        whole = {(a, b): json.loads(r) for a, b, _, r in rows}
        key = con.execute("SELECT options_hash FROM pair_cache").fetchone()[0]

        def without_arrow(sql, params):
            if "->" in sql:
                raise sqlite3.OperationalError('near "->": syntax error')  # SQLite < 3.38
            return con.execute(sql, params)

        for execute in (con.execute, without_arrow):
            for metric in ("barrier", "excess", "train_loss"):
                got = cached_metrics(execute, ids, "geodesic", key, metric)
                assert got == {pair: r.get(metric) for pair, r in whole.items()}
        barriers = cached_metrics(con.execute, ids, "geodesic", key, "barrier")
    assert sorted(barriers.values()) == sorted(table.matrix[np.triu_indices(4, 1)].tolist())

"""Pairs aligned through the family reference: one matching per entry, cached apart."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from click.testing import CliRunner
from zoos import copy_zoo, random_zoo

from canon.cli import cli
from canon.core import random_symmetry
from canon.core.geometry import distances
from canon.core.paths import geodesic_path, positions
from canon.core.permutations import identity_alignment
from canon.engine import Evaluator
from canon.errors import ConfigError
from canon.zoo import Zoo

NET = ("mlp", {"in_features": 64, "hidden": [12], "classes": 10})
POINTS = 5


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Four random digits MLPs and a scrambled copy of the second (permuted, rescaled)."""
    root = random_zoo(tmp_path_factory.mktemp("reference") / "template", NET, 4, "net-{}")
    with Zoo.open(root) as z:
        copy = random_symmetry(z.state("net-1"), z.spec("net-1"), seed=7)
        z.add(copy, name="copy-1", architecture=NET[0], config=NET[1], dataset="digits",
              evaluate=False)  # fmt: skip
    return root


@pytest.fixture
def zoo(tmp_path, template):
    z = copy_zoo(template, tmp_path / "zoo")
    yield z
    z.close()


def _rows(zoo: Zoo, table: str) -> list[tuple]:
    with sqlite3.connect(zoo.root / "canon.sqlite") as con:
        return con.execute(f"SELECT * FROM {table}").fetchall()


def test_pairs_through_the_reference_are_the_paths_between_canonical_forms(zoo):
    """Each entry was matched to the family reference once, when it was added (one cached
    alignment each); a pair's curve is then the geodesic between the two canonical forms,
    with no matching of its own, and its distance theirs."""
    entries = zoo.entries()
    alignments = _rows(zoo, "canonical_cache")
    assert len(alignments) == len(entries)
    table = zoo.barrier_table(points=POINTS, device="cpu", align="reference")
    assert table.computed == 10 and _rows(zoo, "canonical_cache") == alignments
    reference = zoo.reference(entries[0])
    assert table.options == {"points": POINTS, "method": "incoming", "align": "reference",
                             "reference": reference.id}  # fmt: skip
    spec, data = zoo.spec(entries[0]), zoo.dataset(entries[0])
    evaluator = Evaluator(zoo.model(entries[0]), data.x_train, data.y_train, torch.device("cpu"))
    for i, a in enumerate(entries):
        for j, b in enumerate(entries[i + 1 :], start=i + 1):
            ca, cb = zoo.canonical(a), zoo.canonical(b)
            errors = evaluator.evaluate(geodesic_path(ca, cb, spec, positions(POINTS))).errors
            assert table.matrix[i, j] == float(errors.max())
            comparison = zoo.compare(a, b, paths=["geodesic"], points=POINTS, align="reference")
            assert comparison.curves["geodesic"].options["reference"] == reference.id
            expected = distances(ca, cb, spec, identity_alignment(spec), normalized=(ca, cb))
            assert comparison.distances.geodesic == pytest.approx(expected.geodesic, abs=1e-5)


def test_a_scrambled_copy_through_an_unrelated_reference_is_the_same_network(zoo):
    """A permuted, rescaled copy aligned through a reference that is neither of them comes
    back onto the original: distance 0, and the error along the path is the network's own."""
    assert zoo.reference(zoo.get("net-1")).name == "net-0"
    result = zoo.compare("net-1", "copy-1", paths=["geodesic"], points=POINTS, align="reference")
    curve = result.curves["geodesic"]
    assert result.distances.geodesic == pytest.approx(0.0, abs=1e-4)
    assert max(curve.train_error) - min(curve.train_error) == 0.0


def test_reference_and_pair_results_are_cached_apart(zoo):
    """The two alignments are two results per pair: neither answers for the other, each
    rerun computes nothing, and the command line answers the cached one from the index."""
    through = zoo.barrier_table(points=POINTS, device="cpu", align="reference")
    direct = zoo.barrier_table(points=POINTS, device="cpu")
    assert through.computed == direct.computed == 10 and len(_rows(zoo, "pair_cache")) == 20
    assert zoo.barrier_table(points=POINTS, align="reference").computed == 0
    args = ["table", "--zoo", str(zoo.root), "--json", "--points", str(POINTS)]
    out = CliRunner().invoke(cli, [*args, "--align", "reference"])
    assert out.exit_code == 0, out.output
    answer = json.loads(out.stdout)
    assert answer["matrix"] == through.matrix.tolist() and answer["computed"] == 0
    assert answer["options"]["align"] == "reference"


def test_a_new_reference_keys_new_results(zoo):
    """Results through a reference name it in their key: after another entry becomes the
    reference, the table is computed afresh through it."""
    zoo.barrier_table(points=POINTS, device="cpu", align="reference")
    zoo.set_reference("net-2")
    again = zoo.barrier_table(points=POINTS, device="cpu", align="reference")
    assert again.computed == 10 and again.options["reference"] == zoo.get("net-2").id


def test_other_methods_and_unknown_modes_are_refused_with_nothing_written(zoo):
    """Through the reference only the family's own matching applies (the cached alignments
    are its); a refused request writes nothing."""
    before = (_rows(zoo, "canonical_cache"), _rows(zoo, "pair_cache"))
    with pytest.raises(ConfigError, match="family's matching method `incoming`, not `weight`"):
        zoo.barrier_table(points=POINTS, device="cpu", method="weight", align="reference")
    with pytest.raises(ConfigError, match="unknown alignment `nearest`"):
        zoo.compare("net-0", "net-1", points=POINTS, device="cpu", align="nearest")
    assert (_rows(zoo, "canonical_cache"), _rows(zoo, "pair_cache")) == before
    out = CliRunner().invoke(cli, ["table", "--zoo", str(zoo.root), "--align", "nearest"])
    assert out.exit_code == 2 and "nearest" in out.output

"""Commands answered from the index or the pair cache import no torch (nor numpy, scipy,
SQLAlchemy), print exactly what the full path prints, and find results under the same
keys; the mirrors that make this possible stay equal to what they mirror."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from canon.errors import NotCachedError
from canon.zoo import Zoo, cached_comparison, cached_table, entry_details

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "zoo"
BLOCKED = ("torch", "numpy", "scipy", "sqlalchemy", "alembic")

# Commands (a JSON list of argument lists, argv[1]) run through the click entry point in one
# fresh interpreter whose imports of BLOCKED fail; it prints each one's exit code and output,
# and the blocked modules that were loaded anyway.
GUARDED = f"""
import json, sys
BLOCKED = {BLOCKED!r}

class Guard:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} imported while answering from the index")
        return None

sys.meta_path.insert(0, Guard())
from click.testing import CliRunner
from canon.cli import cli
runs = [CliRunner().invoke(cli, args) for args in json.loads(sys.argv[1])]
loaded = sorted(m for m in BLOCKED if m in sys.modules)
print(json.dumps({{"runs": [[r.exit_code, r.stdout] for r in runs], "loaded": loaded}}))
"""

COMPARE = ("compare", "sgd-1", "sgd-0", "--points", "3")
TABLE = ("table", "--tag", "algo=sgd", "--points", "3")
TABLE_NAMES = ("table", "adv-0", "sgd-2", "rsgd-1", "--metric", "geodesic")


def guarded(zoo: Path, *commands: tuple[str, ...]) -> list[str]:
    """Run each ``canon COMMAND --zoo ZOO`` in one interpreter with torch & co. blocked;
    each must succeed, and none of them may load a blocked module. Their stdouts."""
    listed = [[*args, "--zoo", str(zoo)] for args in commands]
    done = subprocess.run(
        [sys.executable, "-c", GUARDED, json.dumps(listed)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["loaded"] == [], report
    for args, (code, out) in zip(commands, report["runs"], strict=True):
        assert code == 0, (args, out)
    return [out for _, out in report["runs"]]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the embedded zoo (manifest and objects; its index rebuilt on open) with
    one comparison and two tables computed, so that they are cached."""
    root = tmp_path_factory.mktemp("embedded") / "zoo"
    root.mkdir()
    shutil.copy2(EMBEDDED / "manifest.json", root / "manifest.json")
    shutil.copytree(EMBEDDED / "objects", root / "objects")
    with Zoo.open(root) as zoo:
        zoo.compare("sgd-1", "sgd-0", points=3, device="cpu")
        zoo.barrier_table(zoo.select(algo="sgd"), points=3, device="cpu")
        zoo.barrier_table(["adv-0", "sgd-2", "rsgd-1"], metric="geodesic", device="cpu")
    return root


def test_cached_commands_import_no_torch(embedded: Path) -> None:
    """`canon list`, `show`, a cached `compare` and cached `table`s answer without torch,
    numpy, scipy, SQLAlchemy or Alembic, and print what the full path prints."""
    with Zoo.open(embedded) as zoo:
        compared = zoo.compare("sgd-1", "sgd-0", points=3, device="cpu").to_dict()
        by_tag = zoo.barrier_table(zoo.select(algo="sgd"), points=3, device="cpu")
        by_name = zoo.barrier_table(["adv-0", "sgd-2", "rsgd-1"], metric="geodesic", device="cpu")
        entry = zoo.get("sgd-0")
        reference = zoo.reference(entry).name
        assert zoo.pair_computations == 0
    outs = guarded(
        embedded,
        ("list", "--json"),
        ("show", "sgd-0", "--json"),
        ("show", "sgd-0"),
        (*COMPARE, "--json"),
        COMPARE,
        (*TABLE, "--json"),
        (*TABLE, "--format", "csv"),
        TABLE,
        (*TABLE_NAMES, "--json"),
    )
    listed, shown, shown_text, compared_json, compared_text, *tables = outs
    names = [e["name"] for e in json.loads(listed)["entries"]]
    assert len(names) == 9 and names == sorted(names)
    assert json.loads(shown) == {**entry.to_dict(), "parent_names": [], "reference": reference}
    assert f"(reference `{reference}`)" in shown_text
    assert compared_json == json.dumps(compared, indent=2) + "\n"
    assert compared_text.startswith("sgd-1 vs sgd-0\ndistances:\n")
    by_tag_json, by_tag_csv, by_tag_text, by_name_json = tables
    assert by_tag_json == by_tag.to_json() + "\n"
    assert by_tag_csv == by_tag.to_csv().replace("\r\n", "\n")  # as click reports it
    assert by_tag_text.startswith("barrier\n")
    assert by_name_json == by_name.to_json() + "\n"


def test_misses_and_refusals_fall_back(embedded: Path) -> None:
    """The cache-only answers give None (the full path then computes or raises) for any
    option not cached, any invalid request, and `auto` not yet recorded for the family."""
    index = embedded / "canon.sqlite"
    paths = ("linear", "linear_aligned", "geodesic")

    def compare(a: str = "sgd-0", b: str = "sgd-1", **changes: object) -> object:
        options: dict = {"paths": paths, "points": 3, "method": "auto", **changes}
        return cached_comparison(index, a, b, **options)

    assert compare() is not None and compare(method="incoming") is not None
    assert compare(points=4) is None  # another option: another key
    assert compare(method="weight") is None
    assert compare(method="nope") is None and compare(points=1) is None
    assert compare(paths=("bend",)) is None and compare(paths=("random_flip",)) is None
    assert compare(b="sgd-9") is None
    table = {"path": "geodesic", "metric": "barrier", "points": 3, "method": "auto"}
    assert cached_table(index, (), {"algo": "sgd"}, **table) is not None
    assert cached_table(index, (), {"algo": "adv"}, **table) is None
    assert cached_table(index, ("sgd-0",), {}, **table) is None  # one entry is an error
    assert cached_table(index, ("sgd-0", "sgd-0"), {}, **table) is None
    assert cached_table(index, (), {"algo": "sgd"}, **{**table, "metric": "nope"}) is None
    assert entry_details(index, "sgd-9") is None
    con = sqlite3.connect(index)
    with con:
        saved = con.execute("SELECT * FROM family_matching").fetchall()
        con.execute("DELETE FROM family_matching")
    con.close()
    assert compare() is None and compare(method="incoming") is not None
    before = index.read_bytes()
    with Zoo.open(embedded) as zoo, pytest.raises(NotCachedError):  # a failed comparison
        zoo.compare("sgd-0", "sgd-1", points=4, device="cpu", compute=False)
    assert index.read_bytes() == before  # ... records nothing
    with Zoo.open(embedded) as zoo:  # recorded again once one succeeds, from the cache
        zoo.compare("sgd-0", "sgd-1", points=3, device="cpu")
        assert zoo.pair_computations == 0
    con = sqlite3.connect(index)
    assert con.execute("SELECT * FROM family_matching").fetchall() == saved
    con.close()
    assert compare() is not None


def test_auto_matching_is_recorded_on_add(embedded: Path) -> None:
    """Every family records what `auto` resolves to when its first member is indexed."""
    from canon.engine import resolve_method
    from canon.zoo import CACHE_VERSION

    with Zoo.open(embedded) as zoo:
        families = {e.family: e for e in zoo.entries()}
        for family, entry in families.items():
            expected = resolve_method("auto", zoo.spec(entry))
            assert zoo.index.family_matching(family) == expected
    con = sqlite3.connect(embedded / "canon.sqlite")
    rows = con.execute("SELECT family, cache_version FROM family_matching").fetchall()
    con.close()
    assert rows == [(f, CACHE_VERSION) for f in families]


def test_mirrors_match_what_they_mirror() -> None:
    """The key fields, record fields and bounds the cache-only path uses without importing
    torch are those of the engine's records: its keys are the full path's keys."""
    from canon.core.geometry import Distances
    from canon.core.paths import MAX_POINTS
    from canon.engine import PathCurve, PathOptions
    from canon.zoo import _keys

    for points, method in ((3, "incoming"), (25, "weight"), (7, "activation")):
        assert _keys.path_options(points, method) == (
            PathOptions(points=points, method=method).to_dict()
        )
    assert tuple(f.name for f in dataclasses.fields(Distances)) == _keys.DISTANCE_METRICS
    required = tuple(
        f.name
        for f in dataclasses.fields(Distances)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    assert required == _keys.DISTANCE_METRICS[:3]
    curve_fields = dataclasses.fields(PathCurve)
    assert tuple(f.name for f in curve_fields) == _keys.CURVE_FIELDS
    assert [f.name for f in curve_fields if f.default is dataclasses.MISSING] == [
        *_keys.CURVE_FIELDS[:6],
        "options",  # a default factory: {}
    ]
    assert _keys.MAX_POINTS == MAX_POINTS


def test_record_shapes_match_the_records() -> None:
    """distances_dict / curve_dict give what Distances / PathCurve (and reversed_curve)
    give for the same stored dict."""
    from canon.core.geometry import Distances
    from canon.engine import PathCurve
    from canon.zoo._analysis import reversed_curve
    from canon.zoo._answers import curve_dict, distances_dict

    dists = {"euclidean": 1.0, "euclidean_aligned": 0.5, "geodesic": 2.0, "hamming": None}
    assert distances_dict(dists) == Distances.from_dict(dists).to_dict()
    stored = {
        "kind": "geodesic",
        "x": [0.0, 0.5, 1.0],
        "train_error": [0.0, 0.25, 0.125],
        "barrier": 0.25,
        "excess": 0.1875,
        "distances": dists,
        "options": {"seed": 0, "method": "incoming", "points": 3},
        "test_error": [0.5, 0.75, 0.5],
    }
    curve = PathCurve.from_dict(stored)
    assert curve_dict(stored) == curve.to_dict()
    assert json.dumps(curve_dict(stored, flipped=True)) == json.dumps(
        reversed_curve(curve).to_dict()
    )
    assert curve_dict({**stored, "surprise": 1}) is None
    assert distances_dict({"euclidean": 1.0}) is None

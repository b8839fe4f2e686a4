"""The zoo store: index schema and migrations, adding and validation, families and caches,
removal, verification, concurrent writers and crashes (real SQLite files, real processes)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from alembic import command
from safetensors.torch import save_file

import canon
from canon.errors import (
    CanonError,
    CheckpointFormatError,
    CorruptZooError,
    DuplicateObjectError,
    EntryInUseError,
    EntryNotFoundError,
    InvalidEntryError,
    NameClashError,
    NonFiniteError,
    SpecMismatchError,
)
from canon.zoo import PairResult, Zoo
from canon.zoo._migrate import alembic_config, head_revision

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
CONFIG = {"in_features": 4, "hidden": [3], "classes": 2}


def mlp_state(seed: int, hidden: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    config = {**CONFIG, "hidden": [hidden]}
    return {k: v.clone() for k, v in canon.build_model("mlp", config).state_dict().items()}


def add(zoo: Zoo, name: str, seed: int, **kw: object) -> canon.zoo.Entry:
    return zoo.add(mlp_state(seed), name=name, architecture="mlp", config=CONFIG, **kw)


def sql(root: Path, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(root / "canon.sqlite")
    try:
        return con.execute(query, params).fetchall()
    finally:
        con.close()


def snapshot(root: Path) -> tuple[object, ...]:
    files = sorted(str(p.relative_to(root)) for p in (root / "objects").rglob("*") if p.is_file())
    tables = ("entries", "tags", "parents", "families", "canonical_cache", "pair_cache")
    return (files, *(sql(root, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


@pytest.fixture
def zoo(tmp_path: Path) -> Zoo:
    return Zoo.open(tmp_path / "zoo")


# -- opening and schema --------------------------------------------------------------------


def test_open_creates_zoo_at_head_with_wal(tmp_path: Path) -> None:
    """A new zoo has its folders, an index at the head revision and the WAL journal."""
    root = tmp_path / "zoo"
    zoo = Zoo.open(root)
    assert (root / "objects").is_dir() and len(zoo) == 0
    assert sql(root, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert sql(root, "PRAGMA journal_mode") == [("wal",)]
    add(zoo, "a", 0)
    zoo.close()
    again = Zoo.open(root)
    assert sql(root, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert [e.name for e in again.entries()] == ["a"]


def test_open_without_create_refuses_missing_zoo(tmp_path: Path) -> None:
    """Zoo.open(create=False) on a folder with no index raises and creates nothing."""
    with pytest.raises(CorruptZooError):
        Zoo.open(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_rev1_fixture_upgrades_with_data_intact(tmp_path: Path) -> None:
    """A zoo frozen at revision 0001 opens at head, keeps its entry and gains pair_cache."""
    root = tmp_path / "old"
    shutil.copytree(FIXTURES / "zoo_rev1", root)
    assert sql(root, "SELECT version_num FROM alembic_version") == [("0001",)]
    zoo = Zoo.open(root)
    assert sql(root, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert sql(root, "SELECT name FROM sqlite_master WHERE name='pair_cache'") == [("pair_cache",)]
    entry = zoo["old-a"]
    assert entry.dataset == "digits" and entry.tags == {"seed": "0"}
    assert entry.metrics == {"train_error": 0.25}
    assert same(zoo.state(entry), mlp_state(0))
    assert zoo.alignment(entry).is_identity
    zoo.pairs.put([PairResult(entry.id, entry.id, "linear", "0" * 64, {"barrier": 0.0})])
    assert zoo.pairs.get(entry.id, entry.id, "linear", "0" * 64) == {"barrier": 0.0}
    assert zoo.verify().ok


def test_rev2_fixture_upgrades_with_data_intact(tmp_path: Path) -> None:
    """A zoo frozen at revision 0002 opens at head, keeps its entry and caches, and gains jobs."""
    root = tmp_path / "old"
    shutil.copytree(FIXTURES / "zoo_rev2", root)
    assert sql(root, "SELECT version_num FROM alembic_version") == [("0002",)]
    zoo = Zoo.open(root)
    assert sql(root, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
    assert sql(root, "SELECT name FROM sqlite_master WHERE name='jobs'") == [("jobs",)]
    entry = zoo["old-b"]
    assert entry.dataset == "digits" and entry.tags == {"seed": "1"}
    assert entry.metrics == {"train_error": 0.125}
    assert same(zoo.state(entry), mlp_state(0))
    assert zoo.alignment(entry).is_identity
    # The cached row survives the migration; as a result of an older cache version it is
    # kept but never served (it would be computed anew).
    kept = "SELECT result, cache_version FROM pair_cache WHERE options_hash = ?"
    assert sql(root, kept, ("0" * 32,)) == [('{"barrier": 0.0}', 1)]
    assert zoo.pairs.get(entry.id, entry.id, "linear", "0" * 32) is None
    assert zoo.verify().ok


def test_migrations_match_models(zoo: Zoo) -> None:
    """Alembic's check finds no drift between the models and the migrations at head."""
    command.check(alembic_config(f"sqlite:///{zoo.root / 'canon.sqlite'}"))


# -- adding --------------------------------------------------------------------------------


def test_add_from_state_dict_safetensors_and_pt(zoo: Zoo, tmp_path: Path) -> None:
    """State dicts, plain safetensors files and weights-only .pt files all add and load back."""
    a = add(
        zoo,
        "a",
        0,
        tags={"seed": 0, "lr": 0.1},
        dataset="digits",
        metrics={"err": 0.5},
        evaluate=False,
    )
    assert a.tags == {"lr": "0.1", "seed": "0"} and a.dataset == "digits"
    assert a.metrics == {"err": 0.5} and a.kind == "solution" and a.created is not None
    st = tmp_path / "b.safetensors"
    save_file(mlp_state(1), str(st))
    pt = tmp_path / "c.pt"
    torch.save(mlp_state(2), pt)
    b = zoo.add(st, name="b", architecture="mlp", config=CONFIG)
    c = zoo.add(pt, name="c", architecture="mlp", config=CONFIG, kind="midpoint", parents=["a", b])
    assert c.parents == (a.id, b.id) and c.kind == "midpoint"
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        assert same(zoo.state(name), mlp_state(seed))
    assert [e.name for e in zoo.entries()] == ["a", "b", "c"] and len(zoo) == 3
    assert "a" in zoo and "zz" not in zoo
    assert [e.name for e in zoo.select(seed=0)] == ["a"]
    assert [e.name for e in zoo.select(kind="midpoint")] == ["c"]
    assert [e.name for e in zoo.select(architecture="mlp", dataset="digits")] == ["a"]
    assert isinstance(zoo.model(a), torch.nn.Module)


def test_prepared_weights_are_held_once_and_stored_as_prepared(zoo: Zoo, tmp_path: Path) -> None:
    """A prepared file's tensors are views into the bytes to store (not a second copy of the
    weights), and the object the add writes is exactly those bytes."""
    import numpy as np

    path = tmp_path / "w.safetensors"
    save_file(mlp_state(3), str(path))
    prepared = zoo.prepare(path, "mlp", CONFIG)
    start = np.frombuffer(prepared.data, dtype=np.uint8).ctypes.data
    for name, t in prepared.state.items():
        assert start < t.data_ptr() < start + len(prepared.data), name
    assert same(prepared.state, mlp_state(3))
    entry = zoo.add(path, name="w", architecture="mlp", config=CONFIG)
    assert zoo.objects.path(entry.id).read_bytes() == prepared.data.tobytes()


def test_metadata_round_trip(zoo: Zoo, tmp_path: Path) -> None:
    """An object written by the zoo carries its architecture: it adds without architecture=."""
    a = add(zoo, "a", 0)
    other = Zoo.open(tmp_path / "other")
    copy = tmp_path / "a.safetensors"
    shutil.copy(zoo.objects.path(a.id), copy)
    assert canon.read_header(copy).metadata["canon.architecture"] == "mlp"
    b = other.add(copy, name="a-copy")
    assert (b.id, b.architecture, b.config, b.family) == (a.id, "mlp", a.config, a.family)


@pytest.mark.parametrize(
    "case",
    [
        "bad_name",
        "unknown_arch",
        "wrong_shapes",
        "nan",
        "not_safetensors",
        "pt_not_state",
        "duplicate_name",
        "duplicate_object",
        "bad_tag",
        "unknown_parent",
        "no_architecture",
    ],
)
def test_bad_input_leaves_zoo_unchanged(zoo: Zoo, tmp_path: Path, case: str) -> None:
    """Every invalid add raises a clear CanonError and writes no object and no row."""
    add(zoo, "a", 0)
    before = snapshot(zoo.root)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    bad_pt = tmp_path / "bad.pt"
    torch.save({"nested": {"w": torch.zeros(2)}}, bad_pt)
    nan = mlp_state(5)
    nan["fc1.weight"][0, 0] = float("nan")
    attempts = {
        "bad_name": (InvalidEntryError, lambda: add(zoo, "../evil", 1)),
        "unknown_arch": (
            KeyError,
            lambda: zoo.add(mlp_state(1), name="x", architecture="nope", config={}),
        ),
        "wrong_shapes": (
            SpecMismatchError,
            lambda: zoo.add(mlp_state(1, hidden=5), name="x", architecture="mlp", config=CONFIG),
        ),
        "nan": (NonFiniteError, lambda: zoo.add(nan, name="x", architecture="mlp", config=CONFIG)),
        "not_safetensors": (
            CheckpointFormatError,
            lambda: zoo.add(junk, name="x", architecture="mlp", config=CONFIG),
        ),
        "pt_not_state": (
            CheckpointFormatError,
            lambda: zoo.add(bad_pt, name="x", architecture="mlp", config=CONFIG),
        ),
        "duplicate_name": (NameClashError, lambda: add(zoo, "a", 1)),
        "duplicate_object": (DuplicateObjectError, lambda: add(zoo, "a2", 0)),
        "bad_tag": (InvalidEntryError, lambda: add(zoo, "x", 1, tags={"bad key": "v"})),
        "unknown_parent": (EntryNotFoundError, lambda: add(zoo, "x", 1, parents=["ghost"])),
        "no_architecture": (CanonError, lambda: zoo.add(mlp_state(1), name="x")),
    }
    error, attempt = attempts[case]
    with pytest.raises(error) as info:
        attempt()
    assert isinstance(info.value, CanonError)
    if case == "duplicate_object":
        assert "`a`" in str(info.value) and info.value.existing == "a"  # type: ignore[attr-defined]
    assert snapshot(zoo.root) == before


def test_unknown_name_suggests_close_match(zoo: Zoo) -> None:
    """Looking up a missing name raises EntryNotFoundError (a KeyError) with did-you-mean."""
    add(zoo, "solution-1", 0)
    with pytest.raises(KeyError, match="did you mean `solution-1`"):
        zoo["solution-2"]


# -- families, alignment and caches --------------------------------------------------------


def test_canonical_form_is_symmetry_invariant_and_cached(zoo: Zoo) -> None:
    """A permuted, rescaled copy has the reference's canonical form; alignments are cached."""
    a = add(zoo, "a", 0)
    spec = zoo.spec(a)
    twin = canon.random_symmetry(mlp_state(0), spec, seed=3)
    b = zoo.add(twin, name="b", architecture="mlp", config=CONFIG)
    c = add(zoo, "c", 7)
    assert zoo.reference(b) == a and zoo.reference(a.family) == a
    assert same(zoo.canonical(a), zoo.canonical(b), atol=1e-5)
    assert not same(zoo.canonical(a), zoo.canonical(c), atol=1e-3)
    cached = sql(zoo.root, "SELECT entry_id, reference_id FROM canonical_cache")
    assert set(cached) == {(a.id, a.id), (b.id, a.id), (c.id, a.id)}
    zoo.pairs.put([PairResult(b.id, a.id, "linear", "f" * 64, {"barrier": 0.1})])
    assert zoo.pairs.get(a.id, b.id, "linear", "f" * 64) == {"barrier": 0.1}
    assert zoo.pairs.get(a.id, b.id, "geodesic", "f" * 64) is None

    zoo.set_reference("c")
    assert zoo.reference(a) == zoo["c"]
    assert sql(zoo.root, "SELECT * FROM canonical_cache") == []
    assert sql(zoo.root, "SELECT * FROM pair_cache") == []
    assert same(zoo.canonical(a), zoo.canonical(b), atol=1e-5)
    assert zoo.alignment(c).is_identity
    assert len(sql(zoo.root, "SELECT * FROM canonical_cache")) == 3


def test_rm_removes_entry_caches_and_object(zoo: Zoo) -> None:
    """rm deletes the row, its tags, caches and object; parents and references are protected."""
    a = add(zoo, "a", 0)
    b = add(zoo, "b", 1, tags={"x": 1})
    zoo.pairs.put([PairResult(a.id, b.id, "linear", "0" * 64, {"barrier": 0.2})])
    c = add(zoo, "c", 2, kind="midpoint", parents=["b"])
    with pytest.raises(EntryInUseError, match="parent"):
        zoo.rm("b")
    with pytest.raises(EntryInUseError, match="set_reference"):
        zoo.rm("a")
    zoo.rm(c)
    zoo.rm("b")
    assert "b" not in zoo and not zoo.objects.exists(b.id) and not zoo.objects.exists(c.id)
    assert sql(zoo.root, "SELECT * FROM tags") == []
    assert sql(zoo.root, "SELECT * FROM pair_cache") == []
    assert sql(zoo.root, "SELECT entry_id FROM canonical_cache") == [(a.id,)]
    zoo.rm("a")
    assert len(zoo) == 0 and sql(zoo.root, "SELECT * FROM families") == []
    assert zoo.verify().ok


def test_verify_finds_corruption_missing_and_orphans(zoo: Zoo) -> None:
    """verify reports a flipped byte, a missing object, unreferenced objects and a temp file;
    repair indexes the network no entry held, keeps what is not one, deletes the temp file
    and nothing else (a file that only looks like a temp file included)."""
    a, b = add(zoo, "a", 0), add(zoo, "b", 1)
    assert zoo.verify().ok
    path = zoo.objects.path(a.id)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    zoo.objects.path(b.id).unlink()
    foreign, _ = zoo.objects.put(b"not referenced by any entry")
    network, _ = zoo.objects.put(zoo.prepare(mlp_state(2), "mlp", CONFIG).data)  # a killed add
    temp = zoo.objects.root / "00" / f".tmp-{'0' * 16}-123-abcdef01"
    temp.parent.mkdir(exist_ok=True)
    temp.write_bytes(b"partial")
    lookalike = zoo.objects.root / "00" / ".tmp-notes"
    lookalike.write_bytes(b"a user's file")
    report = zoo.verify()
    assert not report.ok
    assert report.bad_hashes == (a.id,) and report.missing_objects == (b.id,)
    assert report.orphan_objects == tuple(sorted((foreign, network)))
    assert report.orphan_temp_files == (temp,)
    repaired = zoo.verify(repair=True)
    assert repaired.repaired == (str(temp),) and not temp.exists() and lookalike.exists()
    assert repaired.recovered == (f"recovered-{network[:12]}",)
    assert [k.split(":")[0] for k in repaired.kept_objects] == [foreign]
    assert zoo.objects.exists(foreign) and zoo.objects.exists(network)
    entry = zoo.get(f"recovered-{network[:12]}")
    assert entry.id == network and entry.tags == {"recovered": "true"}
    torch.testing.assert_close(zoo.state(entry), mlp_state(2), rtol=0, atol=0)
    with pytest.raises(CorruptZooError):
        zoo.state("b")


def test_object_paths_reject_non_hashes(zoo: Zoo) -> None:
    """Object ids must be 64 lowercase hex digits: no path traversal through the store."""
    for bad in ("../../etc/passwd", "A" * 64, "a" * 63, "g" * 64):
        with pytest.raises(InvalidEntryError):
            zoo.objects.path(bad)


# -- concurrency and crashes ---------------------------------------------------------------

# Workers import first, then wait for a go file, so their opens and adds overlap.
ADD_ONE = f"""
import os, sys, time, torch, canon
from canon.zoo import Zoo
seed, root, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.manual_seed(seed)
state = canon.build_model("mlp", {CONFIG!r}).state_dict()
open(go + str(seed), "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
Zoo.open(root).add(state, name=f"net{{seed}}", architecture="mlp", config={CONFIG!r})
"""

ADD_LOOP = f"""
import sys, torch, canon
from canon.zoo import Zoo
start, root = int(sys.argv[1]), sys.argv[2]
zoo = Zoo.open(root)
print("ready", flush=True)
for seed in range(start, start + 1000):
    torch.manual_seed(seed)
    state = canon.build_model("mlp", {CONFIG!r}).state_dict()
    zoo.add(state, name=f"net{{seed}}", architecture="mlp", config={CONFIG!r})
    print(seed, flush=True)
"""


# One thread per worker: eight torch imports on two cores are slow enough already.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.slow  # eight processes importing torch on two cores
def test_eight_processes_add_at_once(tmp_path: Path) -> None:
    """Eight processes adding to one new zoo at once all succeed; the zoo ends consistent."""
    root, go = tmp_path / "zoo", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ADD_ONE, str(seed), str(root), str(go)],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seed in range(8)
    ]
    deadline = time.monotonic() + 150
    while not all(Path(f"{go}{s}").exists() for s in range(8)) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    go.touch()
    results = [p.communicate(timeout=150) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err.decode()[-800:] for _, err in results]
    zoo = Zoo.open(root)
    assert [e.name for e in zoo.entries()] == sorted(f"net{s}" for s in range(8))
    assert zoo.verify().ok
    for seed in range(8):
        assert same(zoo.state(f"net{seed}"), mlp_state(seed))


# three writer processes killed at random; tests/test_crash.py's targeted kills stay fast
@pytest.mark.slow
def test_sigkill_during_adds_leaves_a_consistent_zoo(tmp_path: Path) -> None:
    """A writer killed at random moments leaves no bad or missing object; earlier entries load."""
    root = tmp_path / "zoo"
    Zoo.open(root).close()
    rng = random.Random(1234)
    added: set[int] = set()
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", ADD_LOOP, str(round_ * 1000), str(root)],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        first = proc.stdout.readline().strip()  # one add done: the rest runs at full speed
        added.add(int(first))
        time.sleep(rng.uniform(0.0, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        added |= {int(line) for line in out.split()}
        zoo = Zoo.open(root)
        report = zoo.verify()
        assert report.bad_hashes == () and report.missing_objects == (), report
        names = {e.name for e in zoo.entries()}
        assert {f"net{s}" for s in added} <= names
        for name in names:  # confirmed adds and any committed just before the kill
            assert same(zoo.state(name), mlp_state(int(name.removeprefix("net"))))
        zoo.close()
    assert len(added) >= 3


def test_head_revision_constant_matches_the_scripts() -> None:
    """HEAD_REVISION (which lets an up-to-date index open without Alembic) is the scripts' head."""
    from canon.zoo._layout import HEAD_REVISION

    assert head_revision() == HEAD_REVISION


def test_weights_of_an_entry_removed_meanwhile_are_not_called_damage(zoo: Zoo) -> None:
    """Work that reads an entry another process removed since (`canon rm` during a job)
    fails with EntryNotFoundError; an entry whose object alone is gone is damage."""
    kept, gone = add(zoo, "kept", 0), add(zoo, "gone", 1)
    zoo.rm("gone")
    with pytest.raises(EntryNotFoundError):
        zoo.state(gone)
    zoo.objects.path(kept.id).unlink()
    with pytest.raises(CorruptZooError, match="missing"):
        zoo.state(kept)

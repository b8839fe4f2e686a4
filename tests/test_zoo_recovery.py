"""A damaged zoo never loses a network: emptied or lost indexes, stale manifests, damaged
objects in the way, removals racing adds of the same weights, failed removals; and the
manifest of a zoo that has one follows its index.

Real SQLite files and real processes; a race is made exact by pausing one process (the
child wraps one real function, as ``crash_harness`` does) while another runs to the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import canon
from canon.cli import cli
from canon.errors import CorruptZooError
from canon.zoo import Zoo

CONFIG = {"in_features": 8, "hidden": [4], "classes": 2}
ARCH = ["--arch", "mlp", "--config", json.dumps(CONFIG)]


def weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in canon.build_model("mlp", CONFIG).state_dict().items()}


def make_zoo(root: Path, n: int) -> list[str]:
    """A zoo of ``n`` small MLPs n0..; their ids."""
    with Zoo.open(root) as zoo:
        return [
            zoo.add(weights(i), name=f"n{i}", architecture="mlp", config=CONFIG).id
            for i in range(n)
        ]


def files(root: Path) -> dict[str, str]:
    """Every file under ``root`` (SQLite's -wal/-shm aside) and the sha256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def run(root: Path, *args: str, code: int = 0) -> str:
    """Run a command in-process on the zoo; check its exit code; its output."""
    result = CliRunner().invoke(cli, [*args, "--zoo", str(root), "--device", "cpu"])
    assert result.exit_code == code, (args, result.output)
    return result.output


def names(root: Path) -> set[str]:
    with Zoo.open(root, create=False) as zoo:
        return {e.name for e in zoo.entries()}


# -- an emptied or lost index ---------------------------------------------------------------


def test_an_emptied_index_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    """A 0-byte canon.sqlite beside objects is damage, not a new zoo: every command refuses
    it with one line and writes nothing (before, `canon list` initialized it and a repair
    then deleted every object)."""
    root = tmp_path / "zoo"
    make_zoo(root, 2)
    for suffix in ("", "-wal", "-shm"):
        (root / f"canon.sqlite{suffix}").unlink(missing_ok=True)
    (root / "canon.sqlite").write_bytes(b"")
    before = files(root)
    for command in (["list"], ["show", "n0"], ["verify"], ["verify", "--repair"], ["init"]):
        out = run(root, *command, code=1)
        assert "holds no index" in out and "2 objects" in out, out
        assert files(root) == before
    with pytest.raises(CorruptZooError, match=r"canon init.*verify --repair"):
        Zoo.open(root)


def test_an_empty_index_file_of_a_new_zoo_is_initialized(tmp_path: Path) -> None:
    """An empty index with no objects and no manifest is a zoo whose creation was cut short:
    it opens as an empty zoo."""
    root = tmp_path / "zoo"
    root.mkdir()
    (root / "canon.sqlite").write_bytes(b"")
    with Zoo.open(root) as zoo:
        assert len(zoo) == 0 and zoo.verify().ok


def test_a_lost_index_is_rebuilt_from_the_objects_by_init_and_repair(tmp_path: Path) -> None:
    """Without index and manifest the objects are still the networks: commands say how to
    index them again, and `canon init` + `canon verify --repair` give every one back, the
    weights bit for bit and the family's alignment recomputed."""
    root = tmp_path / "zoo"
    ids = make_zoo(root, 3)
    for suffix in ("", "-wal", "-shm"):
        (root / f"canon.sqlite{suffix}").unlink(missing_ok=True)
    assert "`canon init` then `canon verify --repair`" in run(root, "list", code=1)
    run(root, "init")
    report = json.loads(run(root, "verify", "--json"))
    assert report["ok"] and sorted(report["orphan_objects"]) == sorted(ids)
    repaired = json.loads(run(root, "verify", "--repair", "--json"))
    assert sorted(repaired["recovered"]) == sorted(f"recovered-{i[:12]}" for i in ids)
    assert repaired["kept_objects"] == [] and repaired["repaired"] == []
    with Zoo.open(root, create=False) as zoo:
        for i, sha in enumerate(ids):
            entry = zoo.get(f"recovered-{sha[:12]}")
            assert entry.id == sha and entry.tags == {"recovered": "true"}
            torch.testing.assert_close(zoo.state(entry), weights(i), rtol=0, atol=0)
        assert zoo.verify().ok and not zoo.verify().orphan_objects
        assert len({e.family for e in zoo.entries()}) == 1
        reference = zoo.reference(f"recovered-{ids[0][:12]}")
        for entry in zoo.entries():  # each aligned to the family's reference again
            spec = zoo.spec(entry)
            expected = canon.canonicalize(zoo.state(entry), spec, reference=zoo.state(reference))
            torch.testing.assert_close(zoo.canonical(entry), expected)


def test_a_stale_manifest_loses_nothing(tmp_path: Path) -> None:
    """An index rebuilt from a manifest written before the last add does not list that
    entry; its object is reported, and the repair indexes it (it used to delete it)."""
    root = tmp_path / "zoo"
    make_zoo(root, 2)
    with Zoo.open(root) as zoo:
        older = zoo.write_manifest().read_bytes()
        late = zoo.add(weights(7), name="late", architecture="mlp", config=CONFIG)
    (root / "manifest.json").write_bytes(older)  # an older copy: from a backup, or git
    for suffix in ("", "-wal", "-shm"):
        (root / f"canon.sqlite{suffix}").unlink(missing_ok=True)
    assert names(root) == {"n0", "n1"}
    assert json.loads(run(root, "verify", "--json"))["orphan_objects"] == [late.id]
    repaired = json.loads(run(root, "verify", "--repair", "--json"))
    assert repaired["recovered"] == [f"recovered-{late.id[:12]}"]
    assert names(root) == {"n0", "n1", f"recovered-{late.id[:12]}"}


def test_repair_indexes_an_entry_the_manifest_lists_under_its_own_fields(tmp_path: Path) -> None:
    """An object that manifest.json lists but the index lacks comes back under its manifest
    name, tags and metrics; an unreadable manifest makes no object garbage."""
    root = tmp_path / "zoo"
    make_zoo(root, 1)
    with Zoo.open(root) as zoo:
        zoo.add(
            weights(3),
            name="tagged",
            architecture="mlp",
            config=CONFIG,
            tags={"algo": "sgd"},
            metrics={"train_error": 0.25},
        )
        listing = zoo.write_manifest().read_bytes()
        zoo.rm("tagged", keep_object=True)
    (root / "manifest.json").write_bytes(listing)  # as it was before the removal
    report = json.loads(run(root, "verify", "--json"))
    assert len(report["unindexed_objects"]) == 1 and report["orphan_objects"] == []
    manifest = (root / "manifest.json").read_bytes()
    (root / "manifest.json").write_bytes(manifest[: len(manifest) // 2])  # a half-saved edit
    unreadable = json.loads(run(root, "verify", "--json"))
    assert unreadable["orphan_objects"] == report["unindexed_objects"]
    (root / "manifest.json").write_bytes(manifest)
    repaired = json.loads(run(root, "verify", "--repair", "--json"))
    assert repaired["recovered"] == ["tagged"]
    with Zoo.open(root, create=False) as zoo:
        entry = zoo.get("tagged")
        assert entry.tags == {"algo": "sgd"} and entry.metrics == {"train_error": 0.25}


def test_repair_keeps_what_it_cannot_index(tmp_path: Path) -> None:
    """Objects that are damaged, not canon's stored form, or name code that is not trusted
    are kept and reported with their reason; nothing is deleted."""
    root = tmp_path / "zoo"
    make_zoo(root, 1)
    with Zoo.open(root) as zoo:
        damaged, _ = zoo.objects.put(zoo.prepare(weights(5), "mlp", CONFIG).data)
        path = zoo.objects.path(damaged)
        path.write_bytes(path.read_bytes()[:-1] + b"\x00")
        foreign, _ = zoo.objects.put(b"someone else's bytes")
        code = {"canon.architecture": "os:system", "canon.config": "{}"}
        canon.save_state(weights(6), tmp_path / "code.safetensors", metadata=code)
        untrusted, _ = zoo.objects.put(tmp_path / "code.safetensors")
    before = files(root / "objects")
    repaired = json.loads(run(root, "verify", "--repair", "--json"))
    assert repaired["recovered"] == []
    reasons = dict(k.split(": ", 1) for k in repaired["kept_objects"])
    assert set(reasons) == {damaged, foreign, untrusted}
    assert "damaged" in reasons[damaged] and "trust" in reasons[untrusted].lower()
    assert files(root / "objects") == before


def test_repair_never_follows_links_out_of_the_zoo(tmp_path: Path) -> None:
    """A shard folder that is a symbolic link, and files merely named like temp files, are
    never deleted through."""
    root = tmp_path / "zoo"
    make_zoo(root, 1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".tmp-0000000000000000-1-abcdef01").write_bytes(b"not canon's")
    (root / "objects" / "ff").symlink_to(outside, target_is_directory=True)
    run(root, "verify", "--repair")
    assert (outside / ".tmp-0000000000000000-1-abcdef01").exists()


# -- objects in the way, and removals ------------------------------------------------------


def test_an_add_replaces_a_damaged_file_at_its_objects_path(tmp_path: Path) -> None:
    """A damaged file where the new entry's object belongs is replaced by the right bytes
    (it used to be taken as the object, and verify then failed)."""
    root = tmp_path / "zoo"
    make_zoo(root, 1)
    with Zoo.open(root) as zoo:
        sha = hashlib.sha256(zoo.prepare(weights(4), "mlp", CONFIG).data).hexdigest()
        zoo.objects.path(sha).parent.mkdir(parents=True, exist_ok=True)
        zoo.objects.path(sha).write_bytes(b"\0" * 100)
        zoo.add(weights(4), name="n4", architecture="mlp", config=CONFIG)
        assert zoo.verify().ok and zoo.objects.verify(sha)


def test_a_failed_removal_changes_nothing(tmp_path: Path) -> None:
    """rm of an entry whose object cannot be deleted is refused before the index changes
    (it used to remove the entry and then fail)."""
    from test_hostile import _without_dac_override

    root = tmp_path / "zoo"
    ids = make_zoo(root, 2)
    shard = root / "objects" / ids[1][:2]
    before = files(root)
    shard.chmod(0o555)
    try:
        rm = subprocess.run(
            [sys.executable, "-m", "canon", "rm", "n1", "--zoo", str(root)],
            capture_output=True, text=True, timeout=120,
            preexec_fn=_without_dac_override if os.geteuid() == 0 else None,
        )  # fmt: skip
    finally:
        shard.chmod(0o755)
    assert rm.returncode == 1 and "nothing was changed" in rm.stderr, rm.stderr
    assert files(root) == before
    assert names(root) == {"n0", "n1"}


_PAUSED = """
import sys, time
from pathlib import Path
import canon.zoo._index as index
ready, go, method = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
real = getattr(index.Index, method)
def paused(self, *args, **kwargs):
    ready.touch()
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("never released")
        time.sleep(0.01)
    return real(self, *args, **kwargs)
setattr(index.Index, method, paused)
from canon.cli import cli
cli.main(args=sys.argv[4:], prog_name="canon")
"""


def paused(tmp_path: Path, method: str, *argv: str) -> tuple[subprocess.Popen[str], Path]:
    """Start `canon ARGV` in a process that stops on entering ``Index.<method>``, once it
    has; the process and the file that releases it."""
    ready, go = tmp_path / f"ready-{method}", tmp_path / f"go-{method}"
    cmd = [sys.executable, "-c", _PAUSED, str(ready), str(go), method, *argv, "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the paused process never reached its point"
        time.sleep(0.01)
    return proc, go


def release(proc: subprocess.Popen[str], go: Path) -> None:
    go.touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


@pytest.mark.slow  # real processes paused at the point
def test_a_removal_never_takes_the_object_of_an_add_that_lands_meanwhile(tmp_path: Path) -> None:
    """rm has removed the entry and is about to delete its object when an add of the same
    weights records them: the object stays with the new entry."""
    root = tmp_path / "zoo"
    make_zoo(root, 2)
    canon.save_state(weights(1), tmp_path / "n1.safetensors")
    proc, go = paused(tmp_path, "remove_object", "rm", "n1", "--zoo", str(root))
    run(root, "add", str(tmp_path / "n1.safetensors"), "--name", "again", *ARCH)
    release(proc, go)
    assert names(root) == {"n0", "again"}
    assert json.loads(run(root, "verify", "--json"))["ok"]


@pytest.mark.slow  # real processes paused at the point
def test_an_add_keeps_its_object_when_a_removal_runs_meanwhile(tmp_path: Path) -> None:
    """An add has written its object and waits to record its entry while another entry of
    the same weights is added and removed (taking the object): the entry is recorded with
    its object written again."""
    root = tmp_path / "zoo"
    make_zoo(root, 1)
    canon.save_state(weights(9), tmp_path / "w.safetensors")
    add = ["add", str(tmp_path / "w.safetensors"), *ARCH, "--zoo", str(root)]
    proc, go = paused(tmp_path, "insert", *add, "--name", "slow")
    run(root, "add", str(tmp_path / "w.safetensors"), "--name", "fast", *ARCH)
    run(root, "rm", "fast")
    release(proc, go)
    assert names(root) == {"n0", "slow"}
    assert json.loads(run(root, "verify", "--json"))["ok"]


def test_a_cached_result_for_an_entry_removed_meanwhile_is_dropped(tmp_path: Path) -> None:
    """Results for an entry that another process removed while they were computed are not
    cached, the others are, and the index is not called damaged."""
    from canon.zoo import PairResult

    root = tmp_path / "zoo"
    make_zoo(root, 3)
    with Zoo.open(root) as zoo:
        a, b, c = zoo.get("n0"), zoo.get("n1"), zoo.get("n2")
        zoo.rm("n2")
        results = [PairResult(a.id, b.id, "geodesic", "0" * 64, {"x": 1})]
        results.append(PairResult(a.id, c.id, "geodesic", "0" * 64, {"x": 2}))
        assert zoo.pairs.put(results) == 1
        assert [(r.a, r.b) for r in zoo.pairs.results()] == [tuple(sorted((a.id, b.id)))]


# -- the manifest follows the index ---------------------------------------------------------


def listed(root: Path) -> list[str]:
    return sorted(e["name"] for e in json.loads((root / "manifest.json").read_text())["entries"])


def test_a_zoo_with_a_manifest_keeps_it_current(tmp_path: Path) -> None:
    """Once a zoo has manifest.json, adds, removals and a new reference rewrite it, so that
    the index can always be rebuilt from it (a removal used to leave the manifest naming a
    deleted object, and no command worked once the index was gone)."""
    root = tmp_path / "zoo"
    make_zoo(root, 2)
    with Zoo.open(root) as zoo:
        zoo.write_manifest()
        zoo.add(weights(5), name="n5", architecture="mlp", config=CONFIG)
        assert listed(root) == ["n0", "n1", "n5"]
        zoo.set_reference("n1")
        references = json.loads((root / "manifest.json").read_text())["references"]
        assert list(references.values()) == ["n1"]
        zoo.rm("n0")
        assert listed(root) == ["n1", "n5"]
    run(root, "rm", "n5")
    assert listed(root) == ["n1"]
    for suffix in ("", "-wal", "-shm"):
        (root / f"canon.sqlite{suffix}").unlink(missing_ok=True)
    assert names(root) == {"n1"}
    assert json.loads(run(root, "verify", "--json"))["ok"]


def test_a_zoo_without_a_manifest_gets_none(tmp_path: Path) -> None:
    """Adds and removals write no manifest.json where there was none, and opening a zoo
    whose index is rebuilt from its manifest leaves the manifest byte for byte."""
    root = tmp_path / "zoo"
    make_zoo(root, 2)
    run(root, "rm", "n1")
    assert not (root / "manifest.json").exists()
    with Zoo.open(root) as zoo:
        zoo.write_manifest()
    manifest = (root / "manifest.json").read_bytes()
    for suffix in ("", "-wal", "-shm"):
        (root / f"canon.sqlite{suffix}").unlink(missing_ok=True)
    assert names(root) == {"n0"}
    assert (root / "manifest.json").read_bytes() == manifest


def test_edit_gives_a_recovered_entry_its_name_dataset_and_tags(tmp_path: Path) -> None:
    """`canon edit` renames, names the dataset and sets or removes tags, keeping the id; a new
    dataset drops the entry's cached comparisons; bad values, clashing names and data the
    network cannot run on change nothing."""
    from canon.zoo import PairResult

    root = tmp_path / "zoo"
    ids = make_zoo(root, 2)
    with Zoo.open(root) as zoo:
        zoo.write_manifest()
        zoo.pairs.put([PairResult(ids[0], ids[1], "linear", "0" * 64, {"x": 1})])
    out = run(root, "edit", "n1", "--name", "sgd-1", "--tag", "algo=sgd", "--json")
    assert json.loads(out)["id"] == ids[1] and json.loads(out)["tags"] == {"algo": "sgd"}
    with Zoo.open(root) as zoo:
        assert len(zoo.pairs.results()) == 1  # same data: the comparison still holds
    before = files(root)
    run(root, "edit", "sgd-1", "--name", "n0", code=1)  # taken
    run(root, "edit", "sgd-1", "--tag", "bad key=1", code=1)
    run(root, "edit", "sgd-1", "--name", "../x", code=1)
    run(root, "edit", "sgd-1", code=2)  # nothing to change
    run(root, "edit", "sgd-1", "--dataset", "digits", code=1)  # 8 inputs: cannot run on it
    assert files(root) == before
    elsewhere = f"npz:{tmp_path / 'elsewhere.npz'}"  # not here: no errors measured
    run(root, "edit", "sgd-1", "--dataset", elsewhere, "--untag", "algo")
    with Zoo.open(root) as zoo:
        entry = zoo.get("sgd-1")
        assert (entry.id, entry.dataset, entry.tags) == (ids[1], elsewhere, {})
        assert zoo.pairs.results() == []  # computed on other data
    assert listed(root) == ["n0", "sgd-1"]

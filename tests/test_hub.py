"""Push and pull through the real Hub client against a Hub-protocol server on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy
import pytest
import torch
from hub_server import FakeHub
from huggingface_hub import HfApi

from canon.architectures import build_model
from canon.errors import (
    CorruptZooError,
    HubError,
    InvalidManifestError,
    MergeConflictError,
    NameClashError,
    PushConflictError,
    UntrustedCodeError,
)
from canon.hub import CARD_FILE, MANIFEST_FILE, RESULTS_FILE, pull, push
from canon.zoo import Zoo
from canon.zoo._manifest import manifest, object_path

TOKEN = "hf_test_token"
CONFIG = {"in_features": 64, "hidden": [12], "classes": 10}
POINTS = 25  # the default: the model card shows cached default tables


def _net(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model("mlp", CONFIG).state_dict()


def _fill(zoo: Zoo, seeds: range, prefix: str = "net") -> None:
    for seed in seeds:
        zoo.add(
            _net(seed),
            name=f"{prefix}{seed}",
            architecture="mlp",
            config=CONFIG,
            dataset="digits",
            tags={"algo": "sgd" if seed % 2 else "rsgd", "seed": seed},
        )


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture
def options(hub: FakeHub, tmp_path: Path) -> dict[str, Any]:
    """Client options: the loopback endpoint, the token, a Hub cache of this test's own."""
    return {"endpoint": hub.endpoint, "token": TOKEN}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture(scope="module")
def source_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed zoo of three small MLPs on digits, its geodesic barrier table cached; built once."""
    root = tmp_path_factory.mktemp("hub-source") / "source"
    with Zoo.open(root) as zoo:
        _fill(zoo, range(3))
        zoo.barrier_table(path="geodesic", points=POINTS, device="cpu")
    return root


@pytest.fixture
def source(source_template: Path, tmp_path: Path) -> Iterator[Zoo]:
    """A zoo of three small MLPs on digits, with its geodesic barrier table cached: a fresh
    copy of the template for each test (tests add entries to it and push it)."""
    shutil.copytree(source_template, tmp_path / "source")
    zoo = Zoo.open(tmp_path / "source")
    yield zoo
    zoo.close()


def test_push_then_pull_gives_identical_entries_and_table(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """Push, then pull into an empty zoo: same entries, and the same barrier table from cache."""
    pushed = push(source, "lab/roundtrip", **options)
    assert (pushed.uploaded, pushed.kept, pushed.entries) == (3, 0, 3)
    assert pushed.commit == hub.head("lab/roundtrip")
    files = hub.files("lab/roundtrip")
    assert {MANIFEST_FILE, RESULTS_FILE, CARD_FILE} <= set(files)
    assert {object_path(e.id) for e in source.entries()} <= set(files)
    card = files[CARD_FILE].decode()
    assert "library_name: canon" in card and "- digits" in card
    assert "| net0 | mlp | digits | solution |" in card
    assert "## Geodesic barriers" in card

    with Zoo.open(tmp_path / "copy") as copy:
        pulled = pull(copy, "lab/roundtrip", cache_dir=cache, **options)
        assert sorted(pulled.added) == ["net0", "net1", "net2"]
        assert pulled.commit == pushed.commit and pulled.downloaded == 3
        assert [e.to_dict() for e in copy.entries()] == [e.to_dict() for e in source.entries()]
        assert manifest(copy) == manifest(source)
        table = copy.barrier_table(path="geodesic", points=POINTS, device="cpu")
        assert table.computed == 0  # every pair came with the pull
        expected = source.barrier_table(path="geodesic", points=POINTS, device="cpu")
        assert table.names == expected.names
        assert table.matrix.tolist() == expected.matrix.tolist()
        for e in copy.entries():
            assert copy.objects.path(e.id).read_bytes() == source.objects.path(e.id).read_bytes()


def test_a_pull_never_changes_the_zoos_own_cached_results(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A remote's results for pairs of entries the zoo already holds are ignored (a repo
    listing no entries once zeroed a zoo's whole table); results for the pairs of an
    entry the pull adds come along, without replacing one the zoo has cached."""
    from canon.hub._push import results_document

    own = source.pairs.results()
    forged = results_document(source)
    for pair in forged["pairs"]:
        if "barrier" in pair["result"]:
            pair["result"]["barrier"] = 0.0
    empty = {"format": "canon-zoo", "schema_version": 1, "entries": [], "references": {}}
    files = {MANIFEST_FILE: json.dumps(empty).encode(), RESULTS_FILE: json.dumps(forged).encode()}
    hub.commit("evil/empty", files)
    assert pull(source, "evil/empty", cache_dir=cache, **options).results == 0
    assert source.pairs.results() == own

    with Zoo.open(tmp_path / "other") as other:  # one more network, compared with net0
        _fill(other, range(1))
        _fill(other, range(7, 8))  # weights no other test of this module pushes
        other.barrier_table(path="geodesic", points=POINTS, device="cpu")
        push(other, "lab/more", **options)
    pulled = pull(source, "lab/more", cache_dir=cache, **options)
    assert pulled.added == ["net7"] and pulled.results > 0
    after = {(r.a, r.b, r.kind, r.options_hash): r.result for r in source.pairs.results()}
    kept = {(r.a, r.b, r.kind, r.options_hash): r.result for r in own}
    assert all(after[key] == result for key, result in kept.items())
    added = source.get("net7").id
    assert all(added in key[:2] for key in set(after) - set(kept))


@pytest.mark.parametrize("damage", ["flipped", "missing"])
def test_push_refuses_a_damaged_or_missing_object(
    hub: FakeHub, source: Zoo, options: dict[str, Any], damage: str
) -> None:
    """An object that no longer hashes to its id (or is gone) would be published under an
    id it does not have, breaking every pull: refused before the repository is made."""
    path = source.objects.path(source.get("net1").id)
    if damage == "missing":
        path.unlink()
    else:
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))
    state = "missing" if damage == "missing" else "damaged"
    with pytest.raises(CorruptZooError, match=f"object of `net1` is {state}"):
        push(source, f"lab/{damage}", **options)
    assert f"lab/{damage}" not in hub.repos


def test_pull_replaces_a_damaged_local_object(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A damaged file where a pulled entry's object belongs is fetched again and replaced,
    never taken as the object."""
    push(source, "lab/damaged", **options)
    entry = source.get("net1")
    with Zoo.open(tmp_path / "copy") as copy:
        path = copy.objects.path(entry.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 64)
        pulled = pull(copy, "lab/damaged", cache_dir=cache, **options)
        assert pulled.downloaded == 3 and copy.verify().ok
        assert path.read_bytes() == source.objects.path(entry.id).read_bytes()


@pytest.mark.slow  # real processes killed by SIGKILL
@pytest.mark.parametrize("kill_at", ["before-commit", "after-commit"])
def test_a_pull_killed_midway_adds_all_its_entries_or_none(
    hub: FakeHub, source: Zoo, options: dict[str, Any], tmp_path: Path, kill_at: str
) -> None:
    """A `canon pull` SIGKILLed at the commit of its first entry leaves none of the pulled
    entries, or all of them (one transaction), never a part; the zoo verifies either way."""
    push(source, "lab/killed", **options)
    zoo = tmp_path / "zoo"
    with Zoo.open(zoo) as target:
        target.add(_net(7), name="mine", architecture="mlp", config=CONFIG)
    harness = Path(__file__).with_name("crash_harness.py")
    argv = ["pull", "lab/killed", "--zoo", str(zoo), "--cache-dir", str(tmp_path / "c")]
    killed = subprocess.run(
        [sys.executable, str(harness), "--kill-at", kill_at, "--", *argv],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN},
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    with Zoo.open(zoo) as target:
        names = sorted(e.name for e in target.entries())
        pulled = ["net0", "net1", "net2"] if kill_at == "after-commit" else []
        assert names == ["mine", *pulled]
        assert target.verify().ok


@pytest.mark.slow  # a real `canon pull` process
@pytest.mark.slow  # the Hub client backs off for about 5 s before it gives up
def test_a_pull_cut_off_by_the_network_adds_nothing_and_a_retry_completes(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """The connection drops halfway through an object, every time the client asks: the
    pull fails with one line, the zoo is as it was (its own entry, no object of the
    remote's); with one more drop (the client resumes), the same pull completes."""
    push(source, "lab/cut", **options)
    second = object_path(sorted(e.id for e in source.entries())[1])
    hub.cut("lab/cut", second, times=1000)
    with Zoo.open(tmp_path / "mirror") as mirror:
        mirror.add(_net(7), name="mine", architecture="mlp", config=CONFIG)
        before = (manifest(mirror), _files(mirror.root))
        with pytest.raises(HubError, match="cannot pull") as failed:
            pull(mirror, "lab/cut", cache_dir=cache, **options)
        assert len(str(failed.value).splitlines()) == 1
        assert (manifest(mirror), _files(mirror.root)) == before
        hub.cut("lab/cut", second, times=1)
        assert sorted(pull(mirror, "lab/cut", cache_dir=cache, **options).added) == [
            "net0",
            "net1",
            "net2",
        ]
        assert hub.cuts["lab/cut", second] == 0 and mirror.verify().ok


@pytest.mark.slow  # two real `canon pull` processes (about 3 s each, importing torch)
def test_a_failed_pull_leaves_no_zoo_behind(source: Zoo, tmp_path: Path, cache: Path) -> None:
    """`canon pull` that fails creates nothing: not the folder, nor an index beside a user's
    files in a folder that was no zoo."""
    env = {"HF_HUB_OFFLINE": "1"}
    argv = ["pull", "lab/uncached", "--cache-dir", str(cache)]
    missing = tmp_path / "new"
    done = _canon(*argv, "--zoo", str(missing), env=env)
    assert done.returncode == 1 and not missing.exists(), done.stderr
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("mine")
    done = _canon(*argv, "--zoo", str(folder), env=env)
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["readme.txt"]


def test_second_push_uploads_only_new_objects(
    hub: FakeHub, source: Zoo, options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A second push uploads only the new entry's object (counted at the server); a third none."""
    push(source, "lab/incremental", **options)
    before = len(hub.lfs_uploads)
    _fill(source, range(3, 4))
    second = push(source, "lab/incremental", **options)
    assert (second.uploaded, second.kept) == (1, 3)
    assert hub.lfs_uploads[before:] == [source.get("net3").id]
    commits = len(hub.repos["lab/incremental"].commits)
    third = push(source, "lab/incremental", **options)
    assert third.commit is None and third.uploaded == 0
    assert len(hub.lfs_uploads) == before + 1
    assert len(hub.repos["lab/incremental"].commits) == commits
    # canon saw the remote up to date itself: the Hub client was not asked for an empty commit
    assert not [r for r in caplog.records if "No files have been modified" in r.getMessage()]


def test_push_keeps_a_written_readme_and_a_collaborators_results(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A README someone wrote stays (the generated card replaces only canon's own); results
    another clone pushed for pairs of these entries stay too; --force replaces both."""
    push(source, "lab/handwritten", **options)
    hub.commit("lab/handwritten", {CARD_FILE: b"# Our zoo\n\nWritten by hand.\n"})
    with Zoo.open(tmp_path / "clone") as clone:
        pull(clone, "lab/handwritten", cache_dir=cache, **options)
        clone.barrier_table(path="linear", points=POINTS, device="cpu")  # new results
        push(clone, "lab/handwritten", **options)
    theirs = json.loads(hub.files("lab/handwritten")[RESULTS_FILE])["pairs"]
    _fill(source, range(5, 6))  # something new to push, without those results
    push(source, "lab/handwritten", **options)
    files = hub.files("lab/handwritten")
    assert files[CARD_FILE] == b"# Our zoo\n\nWritten by hand.\n"
    kept = json.loads(files[RESULTS_FILE])["pairs"]
    assert all(pair in kept for pair in theirs) and len(kept) > len(source.pairs.results())
    push(source, "lab/handwritten", force=True, **options)
    files = hub.files("lab/handwritten")
    assert b"library_name: canon" in files[CARD_FILE]
    assert len(json.loads(files[RESULTS_FILE])["pairs"]) == len(source.pairs.results())


def test_concurrent_push_fails_cleanly(hub: FakeHub, source: Zoo, options: dict[str, Any]) -> None:
    """A commit landing between a push's read of the head and its commit makes the push fail."""
    push(source, "lab/race", **options)
    _fill(source, range(3, 4))
    hub.interleave("lab/race", {"notes.txt": b"another client's push"})
    with pytest.raises(PushConflictError, match="changed while this push ran"):
        push(source, "lab/race", **options)
    files = hub.files("lab/race")
    assert files["notes.txt"] == b"another client's push"  # not clobbered
    assert object_path(source.get("net3").id) not in files  # and nothing of ours committed
    assert push(source, "lab/race", **options).uploaded == 1  # a retry goes through


def test_push_refuses_to_drop_remote_entries(
    hub: FakeHub, source: Zoo, options: dict[str, Any], tmp_path: Path
) -> None:
    """Pushing a zoo that lacks the remote's entries is refused, unless forced (which deletes)."""
    push(source, "lab/shared", **options)
    with Zoo.open(tmp_path / "other") as other:
        _fill(other, range(10, 11), prefix="other")
        head = hub.head("lab/shared")
        with pytest.raises(PushConflictError, match="pull them first"):
            push(other, "lab/shared", **options)
        assert hub.head("lab/shared") == head
        forced = push(other, "lab/shared", force=True, **options)
        assert forced.deleted == 3
        objects = [p for p in hub.files("lab/shared") if p.startswith("objects/")]
        assert objects == [object_path(other.get("other10").id)]


def test_pull_name_clash_is_an_error_or_renamed(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A remote entry named like a local one with other weights: an error, or --rename."""
    push(source, "lab/clash", **options)
    with Zoo.open(tmp_path / "local") as local:
        local.add(_net(1), name="net1", architecture="mlp", config=CONFIG, dataset="digits")
        local.add(_net(99), name="net0", architecture="mlp", config=CONFIG, dataset="digits")
        before = (local.entries(), _files(local.root))
        with pytest.raises(NameClashError, match="--rename"):
            pull(local, "lab/clash", cache_dir=cache, **options)
        assert (local.entries(), _files(local.root)) == before
        result = pull(local, "lab/clash", cache_dir=cache, rename=True, **options)
        renamed = f"net0-{source.get('net0').id[:8]}"
        assert result.renamed == {"net0": renamed}
        assert local.get(renamed).id == source.get("net0").id
        assert local.get("net0").id != source.get("net0").id
        assert result.present == 1 and sorted(result.added) == [renamed, "net2"]


@pytest.mark.slow  # three pushes and pulls
def test_pull_revision_commit_and_tag(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """Pulling a tag or a commit gives the zoo as it was then; main gives the newest."""
    first = push(source, "lab/versions", **options).commit
    HfApi(endpoint=hub.endpoint, token=TOKEN).create_tag("lab/versions", tag="v1")
    _fill(source, range(3, 5))
    push(source, "lab/versions", **options)
    for revision, count in (("v1", 3), (first, 3), (None, 5)):
        with Zoo.open(tmp_path / f"at-{revision}") as zoo:
            result = pull(zoo, "lab/versions", revision=revision, cache_dir=cache, **options)
            assert len(zoo) == count and len(result.added) == count
    with Zoo.open(tmp_path / "missing") as zoo, pytest.raises(HubError, match="no revision"):
        pull(zoo, "lab/versions", revision="v9", cache_dir=cache, **options)


def _hostile(files: dict[str, Any], entry: dict[str, Any], case: str) -> dict[str, Any]:
    data = json.loads(files[MANIFEST_FILE])
    first = data["entries"][0]
    if case == "absolute":
        first["object"] = "/tmp/evil.safetensors"
    elif case == "dotdot":
        first["object"] = "../../evil.safetensors"
    elif case == "id-path":
        first["id"] = "../../../evil"
    elif case == "schema":
        data["schema_version"] = 99
    elif case == "code":
        first["architecture"] = "subprocess:run"
    elif case == "hash":
        pass  # the object at the first entry's path is replaced by other bytes below
    return data


@pytest.mark.parametrize(
    "case",
    # each case builds and pushes its own zoo; `dotdot` and `code` stay fast (and the hub cases
    # of tests/test_hostile.py run in-process)
    [
        c if c in ("dotdot", "code") else pytest.param(c, marks=pytest.mark.slow)
        for c in ("absolute", "dotdot", "id-path", "schema", "code", "hash")
    ],
)
def test_hostile_repository_is_rejected_with_nothing_written(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path, case: str
) -> None:
    """Absolute or `..` paths, bad ids, unknown schemas, code names, wrong hashes: refused."""
    repo = f"evil/{case}"
    push(source, repo, **options)
    files = hub.files(repo)
    data = _hostile(files, json.loads(files[MANIFEST_FILE])["entries"][0], case)
    changes: dict[str, bytes | None] = {MANIFEST_FILE: json.dumps(data).encode()}
    if case == "hash":
        victim = data["entries"][0]["id"]
        changes[object_path(victim)] = files[object_path(data["entries"][1]["id"])]
    hub.commit(repo, changes)
    zoo_root = tmp_path / "victim"
    refused = UntrustedCodeError if case == "code" else InvalidManifestError
    with Zoo.open(zoo_root) as zoo:
        before = _files(tmp_path)
        with pytest.raises(refused):
            pull(zoo, repo, cache_dir=cache, **options)
        assert len(zoo) == 0
        written = {p for p in _files(tmp_path) - before if not p.startswith("victim/")}
        assert all(p.startswith("hf-cache/") for p in written), written  # the Hub cache only
        assert not list((zoo_root / "objects").rglob("*.safetensors"))
    assert not Path("/tmp/evil.safetensors").exists()


def test_an_object_larger_than_its_spec_is_refused_before_it_is_downloaded(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """An entry of a small MLP whose object is 20 MiB (honest bytes plus padding, its id
    the hash of all of them) is refused from the listing's size: no byte of it lands."""
    import hashlib

    repo = "evil/huge"
    push(source, repo, **options)
    files = hub.files(repo)
    data = json.loads(files[MANIFEST_FILE])
    first = data["entries"][0]
    padded = files[object_path(first["id"])] + bytes(20 << 20)
    first["id"] = hashlib.sha256(padded).hexdigest()
    first["object"] = object_path(first["id"])
    hub.commit(repo, {MANIFEST_FILE: json.dumps(data).encode(), object_path(first["id"]): padded})
    with Zoo.open(tmp_path / "victim") as zoo:
        with pytest.raises(InvalidManifestError, match="more than its architecture and config"):
            pull(zoo, repo, cache_dir=cache, **options)
        assert len(zoo) == 0
    assert max((p.stat().st_size for p in cache.rglob("*") if p.is_file()), default=0) < 1 << 20


def test_private_repo_needs_the_token(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A private repository pulls with the token and is invisible without it."""
    push(source, "lab/private", private=True, **options)
    assert hub.repos["lab/private"].private
    with Zoo.open(tmp_path / "anon") as zoo:
        with pytest.raises(HubError, match="pass --token"):
            pull(zoo, "lab/private", endpoint=hub.endpoint, token=False, cache_dir=cache)  # type: ignore[arg-type]
        assert len(pull(zoo, "lab/private", cache_dir=cache, **options).added) == 3


def test_bad_repo_ids_and_unreachable_hub_are_clear_errors(source: Zoo, tmp_path: Path) -> None:
    """Malformed repository ids and an endpoint nobody listens on give one-line HubErrors."""
    for bad in ("../x", "a/b/c", "", "x/y.git"):
        with pytest.raises(HubError, match="invalid repository id"):
            push(source, bad, endpoint="http://127.0.0.1:9")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(HubError, match="cannot push"):
        push(source, "lab/nowhere", endpoint=dead, token=TOKEN)


def test_nothing_leaves_loopback(source: Zoo, cache: Path, tmp_path: Path) -> None:
    """Every connection and name lookup of a push and a pull is for 127.0.0.1."""
    connects: list[Any] = []
    lookups: list[Any] = []
    recording = True

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if recording and event == "socket.connect":
            connects.append(args[1])
        elif recording and event == "socket.getaddrinfo":
            lookups.append(args[0])

    with FakeHub(token=TOKEN) as fresh:  # a new port: no pooled connection can be reused
        sys.addaudithook(hook)
        try:
            push(source, "lab/loopback", endpoint=fresh.endpoint, token=TOKEN)
            with Zoo.open(tmp_path / "copy") as copy:
                pull(copy, "lab/loopback", endpoint=fresh.endpoint, token=TOKEN, cache_dir=cache)
        finally:
            recording = False
    assert connects, "the audit hook saw no connection"
    assert {address[0] for address in connects} == {"127.0.0.1"}
    assert set(lookups) <= {"127.0.0.1"}
    assert fresh.clients == {"127.0.0.1"}


def _canon(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canon", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.slow  # four `canon` processes; the in-process push/pull tests stay fast
def test_cli_push_pull_and_offline_pull_from_cache(
    hub: FakeHub, source: Zoo, tmp_path: Path, cache: Path
) -> None:
    """`canon push`/`pull` from the shell; with HF_HUB_OFFLINE=1 a cached revision still pulls."""
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN}
    source.close()
    done = _canon("push", "lab/cli", "--zoo", str(source.root), "--json", env=env)
    assert done.returncode == 0, done.stderr
    pushed = json.loads(done.stdout)
    assert pushed["uploaded"] == 3 and pushed["commit"] == hub.head("lab/cli")

    online = tmp_path / "online"
    pull = ["pull", "lab/cli", "--cache-dir", str(cache), "--json"]
    done = _canon(*pull, "--zoo", str(online), env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["downloaded"] == 3

    offline_env = {**env, "HF_HUB_OFFLINE": "1"}
    requests = sum(hub.requests.values())
    done = _canon(*pull, "--zoo", str(tmp_path / "offline"), env=offline_env)
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(done.stdout)["added"]) == ["net0", "net1", "net2"]
    assert sum(hub.requests.values()) == requests  # served from the cache alone
    with Zoo.open(online) as a, Zoo.open(tmp_path / "offline") as b:
        assert manifest(a) == manifest(b)

    done = _canon(
        "pull", "lab/uncached", "--cache-dir", str(cache), "--zoo", str(tmp_path / "x"),
        env=offline_env,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith("Error: cannot pull `lab/uncached@main`")
    assert len(done.stderr.strip().splitlines()) == 1


# -- merging with a collaborator's pushes ----------------------------------------------------


def _remote_entries(hub: FakeHub, repo: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in json.loads(hub.files(repo)[MANIFEST_FILE])["entries"]}


def test_a_push_never_reverts_a_collaborators_edits(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A collaborator retags, renames, gives a new dataset and a new reference, and pushes.
    A push from a zoo that lacks those edits is refused with the remote unchanged (it once
    reverted them); a pull takes them, keeping this zoo's own edits; the next push holds
    both sides' work."""
    push(source, "lab/merge", **options)
    torch.manual_seed(0)
    data = {"x": torch.randn(40, 64).numpy(), "y": torch.randint(0, 10, (40,)).numpy()}
    numpy.savez(tmp_path / "data.npz", **data)
    with Zoo.open(tmp_path / "b") as b:
        pull(b, "lab/merge", cache_dir=cache, **options)
        b.edit("net0", tags={"algo": "adam"}, untag=["seed"])
        b.edit("net1", rename="net1-best", dataset=f"npz:{tmp_path / 'data.npz'}")
        b.set_reference("net2")
        push(b, "lab/merge", **options)
        theirs = b.get("net1-best")
    _fill(source, range(3, 4))
    source.edit("net2", tags={"note": "mine"})
    head = hub.head("lab/merge")
    with pytest.raises(PushConflictError, match="changes this zoo lacks") as refused:
        push(source, "lab/merge", **options)
    assert "`net0`: tag `algo`, tag `seed` removed" in str(refused.value)
    assert "`net1`: renamed `net1-best`, dataset 'npz:" in str(refused.value)
    assert hub.head("lab/merge") == head

    with Zoo.open(source.root, trust_code=True) as trusted:  # a pulled file dataset needs it
        pulled = pull(trusted, "lab/merge", cache_dir=cache, **options)
    assert (pulled.added, sorted(pulled.updated)) == ([], ["net0", "net1-best"])
    assert source.get("net0").tags == {"algo": "adam"}
    assert source.get("net2").tags["note"] == "mine"  # this zoo's edit stays
    mine = source.get("net1-best")
    assert (mine.dataset, mine.metrics) == (theirs.dataset, theirs.metrics)
    assert source.reference(mine).name == "net2"
    assert not [p for p in source.pairs.results() if mine.id in (p.a, p.b)]  # old data's

    push(source, "lab/merge", **options)
    remote = _remote_entries(hub, "lab/merge")
    assert sorted(remote) == ["net0", "net1-best", "net2", "net3"]
    assert remote["net0"]["tags"] == {"algo": "adam"}
    assert remote["net2"]["tags"]["note"] == "mine"
    assert manifest(source) == json.loads(hub.files("lab/merge")[MANIFEST_FILE])


def test_a_pull_takes_a_name_the_remote_freed_by_a_rename(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """The remote renamed `net0` and gave the name to new weights, and swapped `net1` and
    `net2`: one pull applies all of it (renames before the new entry takes the name)."""
    push(source, "lab/freed", **options)
    with Zoo.open(tmp_path / "b") as b:
        pull(b, "lab/freed", cache_dir=cache, **options)
        b.edit("net0", rename="net0-old")
        b.edit("net1", rename="tmp")
        b.edit("net2", rename="net1")
        b.edit("tmp", rename="net2")
        _fill(b, range(10, 11), prefix="new")
        b.edit("new10", rename="net0")
        push(b, "lab/freed", **options)
        expected = {e.name: e.id for e in b.entries()}
    ids = {e.name: e.id for e in source.entries()}
    pulled = pull(source, "lab/freed", cache_dir=cache, **options)
    assert (pulled.added, sorted(pulled.updated)) == (["net0"], ["net0-old", "net1", "net2"])
    assert {e.name: e.id for e in source.entries()} == expected
    assert (expected["net0-old"], expected["net1"]) == (ids["net0"], ids["net2"])


@pytest.mark.slow  # a `canon` process; the in-process merge tests stay fast
def test_a_conflict_is_refused_until_one_side_is_preferred(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """Both sides set one tag differently: push and pull refuse, naming it, with nothing
    changed; `canon pull --prefer local` keeps this zoo's value, the push sends it, and the
    collaborator's next pull takes it (they had not changed it since)."""
    push(source, "lab/conflict", **options)
    b = Zoo.open(tmp_path / "b")
    pull(b, "lab/conflict", cache_dir=cache, **options)
    b.edit("net0", tags={"algo": "adam"})
    push(b, "lab/conflict", **options)
    source.edit("net0", tags={"algo": "lion"}, untag=["seed"])
    with pytest.raises(PushConflictError, match="tag `algo` is 'lion' here and 'adam' there"):
        push(source, "lab/conflict", **options)
    before = (manifest(source), _files(source.root), (source.root / "manifest.json").exists())
    with pytest.raises(MergeConflictError, match="--prefer local") as refused:
        pull(source, "lab/conflict", cache_dir=cache, **options)
    assert refused.value.conflicts == ("`net0`: tag `algo` is 'lion' here and 'adam' there",)
    assert (
        manifest(source),
        _files(source.root),
        (source.root / "manifest.json").exists(),
    ) == before

    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN}
    args = ["pull", "lab/conflict", "--zoo", str(source.root), "--cache-dir", str(cache)]
    done = _canon(*args, "--prefer", "local", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["updated"] == []
    assert source.get("net0").tags == {"algo": "lion"}
    push(source, "lab/conflict", **options)
    assert _remote_entries(hub, "lab/conflict")["net0"]["tags"] == {"algo": "lion"}
    assert pull(b, "lab/conflict", cache_dir=cache, **options).updated == ["net0"]
    assert b.get("net0").tags == {"algo": "lion"}
    b.close()


def test_a_removal_is_pushed_and_a_pull_keeps_what_the_remote_removed(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """An entry removed here since the last sync is removed from the remote by a plain push;
    a collaborator's pull keeps it and says so, and does not count it as new."""
    push(source, "lab/removal", **options)
    with Zoo.open(tmp_path / "b") as b:
        pull(b, "lab/removal", cache_dir=cache, **options)
        gone = source.get("net2")
        source.rm("net2")
        assert push(source, "lab/removal", **options).deleted == 1
        assert object_path(gone.id) not in hub.files("lab/removal")
        assert "net2" not in _remote_entries(hub, "lab/removal")
        pulled = pull(b, "lab/removal", cache_dir=cache, **options)
        assert (pulled.removed_there, pulled.added) == (["net2"], [])
        assert b.get("net2").id == gone.id
    # the removing zoo's own pull does not bring it back
    assert pull(source, "lab/removal", cache_dir=cache, **options).added == []
    assert "net2" not in source


def test_a_pull_applies_nothing_when_the_zoo_changed_meanwhile(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A merge computed before a local edit is refused at the transaction, nothing applied."""
    from canon.zoo import Snapshot, import_entries, merge

    base = Snapshot.of_manifest(manifest(source))
    there = Snapshot(
        {
            **base.entries,
            source.get("net0").id: replace(base.entries[source.get("net0").id], name="x"),
        },
        base.references,
    )
    stale = merge(base, base, there)
    source.edit("net0", tags={"late": "edit"})
    with pytest.raises(MergeConflictError, match=r"changed in .* while this ran"):
        import_entries(source, [], Path, merged=stale)
    assert "net0" in source and "x" not in source


def test_a_new_branch_starts_from_what_main_agreed_on(
    hub: FakeHub, source: Zoo, options: dict[str, Any], cache: Path, tmp_path: Path
) -> None:
    """A zoo that pushed main, then retagged an entry, pushes to a new branch: the branch
    starts as main, so the zoo's record of main is its base and the retag is this zoo's
    edit (not a conflict); main keeps the old tag. A pull of another branch never takes
    main's record (that branch need not descend from it): a zoo that synced main only
    settles the difference itself."""
    push(source, "lab/branches", **options)
    source.edit("net0", tags={"algo": "lion"})
    pushed = push(source, "lab/branches", revision="dev", **options)
    assert pushed.commit == hub.head("lab/branches", "dev") != hub.head("lab/branches")
    assert _remote_entries(hub, "lab/branches")["net0"]["tags"]["algo"] == "rsgd"
    dev = {
        e["name"]: e for e in json.loads(hub.files("lab/branches", "dev")[MANIFEST_FILE])["entries"]
    }
    assert dev["net0"]["tags"]["algo"] == "lion"
    with Zoo.open(tmp_path / "b") as b:
        pull(b, "lab/branches", cache_dir=cache, **options)
        with pytest.raises(MergeConflictError, match="tag `algo`"):
            pull(b, "lab/branches", revision="dev", cache_dir=cache, **options)
        settled = pull(
            b, "lab/branches", revision="dev", cache_dir=cache, prefer="remote", **options
        )
        assert (settled.updated, b.get("net0").tags["algo"]) == (["net0"], "lion")

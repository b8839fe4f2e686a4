"""The hostile-input corpus (tests/hostile_cases.py) against the CLI, the Hub pull and the service.

For every case: exit code 1 with exactly one short, clean ``Error: ...`` line on stderr (or a
4xx answer with one JSON error), no uncaught exception, the zoo byte-for-byte as it was
(SQLite's ``-wal``/``-shm`` aside) unless the case is a documented repair, and hostile code
never run (a marker file stays absent). Cases run in-process through ``CliRunner``; a
handful run through real ``python -m canon`` processes, and the read-only ones through a
process that cannot write to the zoo. Control tests show each harness can also succeed,
detect changes and detect code that runs, so no case passes vacuously.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hostile_cases import (
    CASES,
    CONFIG_JSON,
    HUB_TOKEN,
    INDEX,
    TOKEN,
    Case,
    Ctx,
    EvilSystem,
    Request,
    World,
    _torch_bytes,
    build_world,
)

from canon.cli import cli

CATEGORIES = ("safetensors", "pickle", "input", "zoo", "hub", "serve")
TRANSIENT = {"canon.sqlite-wal", "canon.sqlite-shm"}
# raw control characters (tab and newline aside), DEL and C1 controls such as CSI (\x9b)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")
MAX_LINE = 400
CLEAN_ENV = ("CANON_TRUST_CODE", "CANON_ZOO", "CANON_TOKEN", "HF_HUB_OFFLINE")


# -- snapshots -----------------------------------------------------------------------------


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(path: Path) -> Any:
    """What one path holds: a link target, a file hash, or the kind of special file."""
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_file():
        return _sha(path)
    return ("special", os.lstat(path).st_mode)


def snapshot(root: Path, rows: bool = True) -> Any:
    """{relative path: sha256} of every file, the set of folders, and a hash of the index's
    rows (a write may sit in SQLite's WAL, not yet in canon.sqlite's bytes); -wal/-shm
    excluded. ``rows`` False skips opening the index (a read-only zoo, checked on files)."""
    if not os.path.lexists(root):
        return None
    if root.is_symlink() or not root.is_dir():
        return ({"": _entry(root)}, set(), None)
    files: dict[str, Any] = {}
    dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames:
            rel = str((here / name).relative_to(root))
            if (here / name).is_symlink():
                files[rel] = _entry(here / name)
            else:
                dirs.add(rel)
        for name in filenames:
            if here == root and name in TRANSIENT:
                continue
            files[str((here / name).relative_to(root))] = _entry(here / name)
    dump = None
    index = root / INDEX
    if rows and index.is_file() and not index.is_symlink():
        try:
            con = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
            try:
                dump = hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()
            finally:
                con.close()
        except sqlite3.Error as exc:
            dump = f"unreadable: {exc}"
    return (files, dirs, dump)


def describe_change(before: Any, after: Any) -> str:
    """Which paths a command added, removed or changed (for the failure message)."""
    if before is None or after is None:
        return f"zoo existed before: {before is not None}, after: {after is not None}"
    fb, fa = before[0], after[0]
    parts = []
    for label, paths in (
        ("added", sorted(set(fa) - set(fb))),
        ("removed", sorted(set(fb) - set(fa))),
        ("changed", sorted(p for p in set(fa) & set(fb) if fa[p] != fb[p])),
        ("dirs added", sorted(after[1] - before[1])),
        ("dirs removed", sorted(before[1] - after[1])),
    ):
        if paths:
            parts.append(f"{label}: {paths[:6]}")
    if before[2] != after[2]:
        parts.append("index rows changed")
    return "; ".join(parts) or "no difference"


# -- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a command did: exit code, stdout, stderr, and an uncaught exception if any."""

    code: int
    stdout: str
    stderr: str
    crashed: str | None = None


def _vm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def memory_cap(headroom: int = 6 << 30) -> Iterator[None]:
    """Cap this process's address space (soft limit) at its size now plus ``headroom``, so a
    config asking for a 256 GB layer fails at once instead of paging the machine to death."""
    try:
        import resource
    except ImportError:  # not POSIX
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = _vm_bytes()
    if size is None:
        yield
        return
    cap = size + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def full_argv(ctx: Ctx, argv: list[str]) -> list[str]:
    """``argv`` with ``--zoo`` (the case's zoo) and ``--device cpu`` unless it gives them."""
    out = list(argv)
    if "--zoo" not in out:
        out += ["--zoo", str(ctx.zoo)]
    if "--device" not in out:
        out += ["--device", "cpu"]
    return out


def run_cli(ctx: Ctx, argv: list[str]) -> Outcome:
    """Run a command in-process (CliRunner), as `canon` would from the shell."""
    env: dict[str, str | None] = {k: None for k in CLEAN_ENV}
    with memory_cap():
        result = CliRunner().invoke(cli, full_argv(ctx, argv), env=env)
    exc = result.exception
    crashed = None
    if exc is not None and not isinstance(exc, SystemExit):
        crashed = f"{type(exc).__name__}: {str(exc)[:300]}"
    return Outcome(result.exit_code, result.stdout, result.stderr, crashed)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


def run_process(
    ctx: Ctx, argv: list[str], preexec: Callable[[], None] | None = None, home: Path | None = None
) -> Outcome:
    """Run ``python -m canon ARGV`` as a real process (its PYTHONPATH holds ``ctx.mods``)."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ctx.mods), os.environ.get("PYTHONPATH", ""), _repo_root()) if p
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if home is not None:
        env["HOME"] = str(home)
        env["MPLCONFIGDIR"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "canon", *full_argv(ctx, argv)],
        capture_output=True,
        env=env,
        cwd=ctx.root,
        timeout=180,
        preexec_fn=preexec,
    )
    return Outcome(done.returncode, _decode(done.stdout), _decode(done.stderr))


def _repo_root() -> str:
    import canon

    return str(Path(canon.__file__).resolve().parents[1])


class Runner:
    """What a repair's check may use: run more commands, take snapshots."""

    cli = staticmethod(run_cli)
    snapshot = staticmethod(snapshot)


# -- checks --------------------------------------------------------------------------------


def check_error_line(stderr: str) -> str:
    """stderr is exactly one short, clean `Error: ...` line, with no traceback; that line."""
    assert "Traceback" not in stderr, f"traceback on stderr: {stderr[-800:]!r}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {stderr[:800]!r}"
    line = lines[0]
    assert line.startswith("Error: "), f"not an `Error: ...` line: {line[:300]!r}"
    assert len(line) <= MAX_LINE, f"error line is {len(line)} characters: {line[:300]!r}..."
    bad = CONTROL.search(stderr)
    assert bad is None, f"raw control character {bad.group()!r} on stderr: {stderr[:300]!r}"
    return line


def check_says(line: str, says: tuple[str | tuple[str, ...], ...]) -> None:
    low = line.lower()
    for item in says:
        options = (item,) if isinstance(item, str) else item
        assert any(o.lower() in low for o in options), f"{' or '.join(options)!r} not in {line!r}"


def check_outcome(case: Case, ctx: Ctx, outcome: Outcome, before: Any) -> None:
    """The contract, in order of severity: no code ran, no crash, exit code, one line, no change."""
    expect = case.expect
    assert not ctx.marker.exists(), f"hostile code ran: {ctx.marker.read_text()!r}"
    assert outcome.crashed is None, f"uncaught exception (a traceback): {outcome.crashed}"
    if expect.code is None:
        assert outcome.code in (0, 1), (outcome.code, outcome.stderr[-800:])
    else:
        assert outcome.code == expect.code, (
            f"exit code {outcome.code}, expected {expect.code}; stderr: {outcome.stderr[-600:]!r}"
        )
    if outcome.code != 0:
        line = check_error_line(outcome.stderr)
        check_says(line, expect.says)
    else:
        for stream in (outcome.stdout, outcome.stderr):
            bad = CONTROL.search(stream)
            assert bad is None, f"raw control character {bad.group()!r} in output: {stream[:300]!r}"
    if expect.no_index_after:
        assert not (ctx.zoo / INDEX).exists(), "a failed rebuild left an index behind"
    if expect.unchanged:
        after = snapshot(ctx.zoo, rows=before is None or before[2] is not None)
        assert after == before, f"the zoo changed: {describe_change(before, after)}"
    if expect.check is not None:
        expect.check(ctx, outcome, Runner, before)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The template zoo (index built once) and the bytes the cases are made from."""
    return build_world(tmp_path_factory.mktemp("hostile-world"))


@pytest.fixture(scope="session")
def hub() -> Iterator[Any]:
    from hub_server import FakeHub

    with FakeHub(token=HUB_TOKEN) as server:
        yield server


@pytest.fixture
def hub_endpoint(hub: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Point the Hub client (in this process) at the loopback Hub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    return hub


@pytest.fixture(scope="module")
def service(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """The FastAPI app in-process on a copy of the template zoo, with a token."""
    from fastapi.testclient import TestClient

    from canon.service import create_app

    zoo = tmp_path_factory.mktemp("hostile-service") / "zoo"
    shutil.copytree(world.template, zoo)
    app = create_app(zoo, token=TOKEN, max_upload_bytes=4 << 20, device="cpu")
    with TestClient(app, raise_server_exceptions=False) as client:
        yield zoo, client


@dataclass(frozen=True)
class Sandbox:
    """Where read-only zoos live and how a process is made unable to write them."""

    base: Path
    preexec: Callable[[], None] | None
    how: str


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


def _without_dac_override() -> None:
    """Root without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH / CAP_FOWNER: file modes bind it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # PR_CAPBSET_DROP: gone from the bounding set, so after exec too
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A world-traversable temp folder and a way to run processes that cannot write to 0555
    folders: the plain user when not root; as root, the user nobody (65534) when it can run
    this interpreter and canon, else root stripped of the capabilities that bypass file modes.
    Skips (with the reason) when none of these is possible here."""
    base = Path(tempfile.mkdtemp(prefix="canon-hostile-ro-"))
    os.chmod(base, 0o755)
    probe = base / "probe"
    probe.mkdir()
    os.chmod(probe, 0o555)
    try:
        choices: list[tuple[Callable[[], None] | None, str]]
        if os.geteuid() != 0:
            choices = [(None, f"uid {os.geteuid()} (not root)")]
        else:
            choices = [
                (_as_nobody, "user nobody (65534)"),
                (_without_dac_override, "root without CAP_DAC_OVERRIDE"),
            ]
        chosen = None
        reasons = []
        for preexec, how in choices:
            try:
                imports = subprocess.run(
                    [sys.executable, "-c", "import canon.cli"],
                    cwd=base, capture_output=True, preexec_fn=preexec, timeout=120,
                    env={**os.environ, "PYTHONPATH": _repo_root()},
                )  # fmt: skip
                writes = subprocess.run(
                    [sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"],
                    cwd=base, capture_output=True, preexec_fn=preexec, timeout=60,
                )  # fmt: skip
            except (OSError, subprocess.SubprocessError) as exc:
                reasons.append(f"{how}: {exc}")
                continue
            if imports.returncode != 0:
                reasons.append(f"{how} cannot run canon: {_decode(imports.stderr)[-200:]}")
            elif writes.returncode == 0 or b"PermissionError" not in writes.stderr:
                reasons.append(f"{how} can still write to a 0555 folder")
            else:
                chosen = Sandbox(base, preexec, how)
                break
        if chosen is None:
            pytest.skip("no way to run canon unable to write here: " + "; ".join(reasons))
        yield chosen
    finally:
        _make_writable(base)
        shutil.rmtree(base, ignore_errors=True)


def _make_read_only(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o444)
        for name in dirnames:
            if not (Path(dirpath) / name).is_symlink():
                os.chmod(Path(dirpath) / name, 0o555)
    os.chmod(root, 0o555)


def _make_writable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o755)
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                os.chmod(path, 0o644)


def make_ctx(world: World, root: Path, hub: Any = None) -> Ctx:
    root.mkdir(parents=True, exist_ok=True)
    mods = root / "mods"
    mods.mkdir()
    zoo = root / "zoo"
    shutil.copytree(world.template, zoo)
    return Ctx(world=world, root=root, zoo=zoo, marker=root / "MARKER", mods=mods, hub=hub)


# -- the corpus ----------------------------------------------------------------------------


def test_corpus_size_and_shape() -> None:
    """The corpus holds at least 150 uniquely named cases across all six categories."""
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    counts = Counter(c.category for c in CASES)
    assert set(counts) == set(CATEGORIES), counts
    assert len(CASES) >= 150, counts
    assert 3 <= sum(c.via == "subprocess" for c in CASES) <= 6  # real processes, a handful
    assert all(c.via in ("cli", "subprocess", "readonly", "service", "hub") for c in CASES)


# Real processes (a few seconds each on two cores) run under -m slow; every other case stays fast.
SLOW_VIA = ("subprocess", "readonly")


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, id=c.id, marks=pytest.mark.slow if c.via in SLOW_VIA else ()) for c in CASES],
)
def test_hostile_input(
    case: Case,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """One hostile input: one clean error line (or a 4xx JSON error), nothing changed or run."""
    for name in CLEAN_ENV:
        monkeypatch.delenv(name, raising=False)
    if case.via == "service":
        _run_service_case(case, world, tmp_path, monkeypatch, request.getfixturevalue("service"))
        return
    if case.via == "readonly":
        _run_readonly_case(case, world, request.getfixturevalue("sandbox"))
        return
    hub = request.getfixturevalue("hub_endpoint") if case.via == "hub" else None
    ctx = make_ctx(world, tmp_path / "case", hub)
    monkeypatch.syspath_prepend(str(ctx.mods))
    argv = case.setup(ctx)
    importlib.invalidate_caches()
    before = snapshot(ctx.zoo)
    outcome = run_process(ctx, argv) if case.via == "subprocess" else run_cli(ctx, argv)
    check_outcome(case, ctx, outcome, before)


def _run_readonly_case(case: Case, world: World, box: Sandbox) -> None:
    root = box.base / uuid.uuid4().hex[:12]
    ctx = make_ctx(world, root)
    argv = case.setup(ctx)
    for path in (root, ctx.mods, *(p for p in root.iterdir() if p != ctx.zoo)):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    _make_read_only(ctx.zoo)
    try:
        before = snapshot(ctx.zoo, rows=False)
        outcome = run_process(ctx, argv, preexec=box.preexec, home=root)
        check_outcome(case, ctx, outcome, before)
    finally:
        _make_writable(root)
        shutil.rmtree(root, ignore_errors=True)


def _run_service_case(
    case: Case, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, svc: Any
) -> None:
    zoo, client = svc
    mods = tmp_path / "mods"
    mods.mkdir()
    ctx = Ctx(world=world, root=tmp_path, zoo=zoo, marker=tmp_path / "MARKER", mods=mods)
    monkeypatch.syspath_prepend(str(mods))
    req: Request = case.setup(ctx)
    importlib.invalidate_caches()
    headers = dict(req.headers or {})
    if req.token and "Authorization" not in headers:
        headers["Authorization"] = f"Bearer {TOKEN}"
    before = snapshot(zoo)
    with memory_cap():
        response = client.request(
            req.method, req.url, params=req.params, headers=headers, content=req.content,
            json=req.json,
        )  # fmt: skip
    assert not ctx.marker.exists(), f"hostile code ran: {ctx.marker.read_text()!r}"
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:600])
    try:
        body = response.json()
    except ValueError:
        pytest.fail(f"not a JSON error: {response.text[:300]!r}")
    assert isinstance(body, dict) and set(body) == {"error"}, str(body)[:600]
    error = body["error"]
    assert isinstance(error.get("type"), str) and isinstance(error.get("message"), str), error
    assert "\n" not in error["message"] and len(error["message"]) <= 2000, error["message"][:600]
    after = snapshot(zoo)
    assert after == before, f"the zoo changed: {describe_change(before, after)}"


# -- controls: each harness can succeed, sees changes and sees code that runs --------------


def test_control_cli_add_succeeds_and_snapshot_sees_it(world: World, tmp_path: Path) -> None:
    """A good checkpoint adds (exit 0) and the snapshot sees the zoo change."""
    ctx = make_ctx(world, tmp_path / "c")
    path = ctx.file("good.safetensors", world.good)
    before = snapshot(ctx.zoo)
    outcome = run_cli(
        ctx, ["add", path, "--name", "fine", "--arch", "mlp", "--config", CONFIG_JSON]
    )
    assert outcome.code == 0 and outcome.crashed is None, outcome
    assert snapshot(ctx.zoo) != before
    listed = json.loads(run_cli(ctx, ["list", "--json"]).stdout)["entries"]
    assert [e["name"] for e in listed] == ["fine", "n0", "n1", "n2"]


def test_control_travelling_zoo_rebuilds(world: World, tmp_path: Path) -> None:
    """The template without its index rebuilds and lists its three entries."""
    ctx = make_ctx(world, tmp_path / "c")
    ctx.no_index()
    outcome = run_cli(ctx, ["list", "--json"])
    assert outcome.code == 0, outcome
    assert [e["name"] for e in json.loads(outcome.stdout)["entries"]] == ["n0", "n1", "n2"]


def test_control_marker_module_runs_when_typed(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--arch module:function` typed by the user imports the module: the marker appears, so
    its absence in the hostile cases means something."""
    ctx = make_ctx(world, tmp_path / "c")
    monkeypatch.syspath_prepend(str(ctx.mods))
    arch = ctx.marker_module()
    importlib.invalidate_caches()
    path = ctx.file("plain.safetensors", world.plain)
    run_cli(ctx, ["add", path, "--name", "mine", "--arch", arch])
    assert ctx.marker.exists()


def test_control_marker_module_runs_in_a_subprocess(world: World, tmp_path: Path) -> None:
    """The subprocess runs see the marker module on PYTHONPATH."""
    ctx = make_ctx(world, tmp_path / "c")
    module = ctx.marker_module().partition(":")[0]
    env = {**os.environ, "PYTHONPATH": str(ctx.mods)}
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True, timeout=60)
    assert ctx.marker.exists()


def test_control_malicious_pickle_runs_when_unpickled_unsafely(tmp_path: Path) -> None:
    """The malicious .pt really runs its command under a full (unsafe) unpickle."""
    import torch

    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    path.write_bytes(_torch_bytes(EvilSystem(f"touch {marker}")))
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_control_hub_pull_succeeds(world: World, tmp_path: Path, hub_endpoint: Any) -> None:
    """The untampered crafted repository pulls (exit 0) and adds its two entries."""
    ctx = make_ctx(world, tmp_path / "c", hub_endpoint)
    repo = ctx.hub_repo()
    argv = ["pull", repo, "--cache-dir", str(ctx.root / "hf"), "--token", HUB_TOKEN, "--json"]
    outcome = run_cli(ctx, argv)
    assert outcome.code == 0 and outcome.crashed is None, outcome
    assert sorted(json.loads(outcome.stdout)["added"]) == ["r0", "r1"]


def test_control_service_upload_succeeds(world: World, service: tuple[Path, Any]) -> None:
    """A good upload with the token answers 201 and changes the zoo."""
    zoo, client = service
    before = snapshot(zoo)
    response = client.post(
        "/api/entries",
        params={"name": "control-up", "arch": "mlp", "config": CONFIG_JSON},
        content=world.good,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 201, response.text
    assert snapshot(zoo) != before


@pytest.mark.slow  # the control of the read-only (slow) cases: real processes
def test_control_read_only_sandbox_still_reads(world: World, sandbox: Sandbox) -> None:
    """In the sandbox a process still reads a writable zoo copy (so refusals mean read-only)."""
    root = sandbox.base / uuid.uuid4().hex[:12]
    ctx = make_ctx(world, root)
    try:
        for dirpath, _, filenames in os.walk(root):  # writable by anyone, nobody included
            os.chmod(dirpath, 0o777)
            for name in filenames:
                os.chmod(Path(dirpath) / name, 0o666)
        outcome = run_process(ctx, ["list", "--json"], preexec=sandbox.preexec, home=root)
        assert outcome.code == 0, (sandbox.how, outcome.stderr[-600:])
    finally:
        _make_writable(root)
        shutil.rmtree(root, ignore_errors=True)

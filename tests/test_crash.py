"""Crash safety: SIGKILL during `canon add` and `canon table` never corrupts a zoo.

The kills are real: commands run in child processes of ``tests/crash_harness.py``,
which wrap the product's own functions (``ObjectStore.put``, ``os.replace``, the
SQLAlchemy session's commit) so that the child SIGKILLs itself at an exact point,
or which the harness SIGKILLs after a seeded random delay. After every kill:
``canon verify`` exits 0 (garbage such as an orphan object or a ``.tmp-*`` file is
reported, not an error), every entry ``canon list`` shows has its object and the
earlier entries' objects still hash to their ids; re-running the add works and
``canon verify --repair`` reclaims the garbage.

Also here: the peak memory of `canon add` with a config that lies about the
file's shapes (it must refuse without building the huge model).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

import canon
from canon.cli import cli

# Real processes killed by SIGKILL (a forked harness imports torch once, ~10 s): in CI and
# `-m slow`; the fast loop keeps the in-process corpus of tests/test_hostile.py.
pytestmark = pytest.mark.slow

HARNESS = Path(__file__).with_name("crash_harness.py")
EMBEDDED_ZOO = Path(__file__).resolve().parents[1] / "zoo"
CONFIG = {"in_features": 64, "hidden": [16], "classes": 10}
ADD = ["--arch", "mlp", "--config", json.dumps(CONFIG), "--dataset", "digits"]
RANDOM_KILLS = 20
TABLE_NAMES = ["sgd-0", "rsgd-0", "adv-0"]  # 3 pairs of the embedded zoo
KILLED = -9


# -- the harness ---------------------------------------------------------------------------


@dataclass
class Run:
    """One command's outcome in a harness child."""

    returncode: int
    elapsed: float
    stdout: str
    stderr: str
    killed_by_parent: bool = False
    trace: dict[str, float] | None = None

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"returncode {self.returncode} after {self.elapsed:.2f}s\n"
            f"stdout: {self.stdout.strip()[-2000:]}\nstderr: {self.stderr.strip()[-2000:]}"
        )


class Harness:
    """A warm ``crash_harness.py --serve`` process: each command runs in a forked child."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )
        self.ready = False  # it imports torch and canon while the test sets its zoos up

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"the crash harness died (exit {self.proc.poll()})"
        result: dict[str, Any] = json.loads(line)
        return result

    def run(self, *argv: str, **kill: Any) -> Run:
        """Run ``canon ARGV`` in a child; ``kill_at=…`` / ``kill_after=…`` kill it."""
        assert self.proc.stdin is not None
        if not self.ready:
            ready = self._read()
            assert ready.get("ready"), ready
            self.ready = True
        self.proc.stdin.write(json.dumps({"argv": list(argv), **kill}) + "\n")
        self.proc.stdin.flush()
        return Run(**self._read())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


# -- zoos and checks -----------------------------------------------------------------------


def net(path: Path, seed: int, config: dict[str, Any] = CONFIG) -> Path:
    """A seeded random MLP saved as safetensors."""
    torch.manual_seed(seed)
    canon.save_state(canon.build_model("mlp", config).state_dict(), path)
    return path


def invoke(*args: str) -> str:
    """A command in this process (for setting zoos up); must exit 0; its stdout."""
    result = CliRunner().invoke(cli, [*args, "--device", "cpu"])
    assert result.exit_code == 0, (args, result.output)
    return result.stdout


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small zoo: two 64-16-10 MLPs (one with digits errors), closed and quiet."""
    root = tmp_path_factory.mktemp("base")
    zoo = root / "zoo"
    invoke("init", "--zoo", str(zoo))
    invoke("add", str(net(root / "a.safetensors", 0)), "--name", "a", *ADD, "--zoo", str(zoo))
    invoke("add", str(net(root / "b.safetensors", 1)), "--name", "b", *ADD[:4], "--zoo", str(zoo))
    return zoo


def copy_zoo(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return dst


def objects(zoo: Path) -> dict[str, Path]:
    """The object files present: id -> path."""
    return {
        p.name.removesuffix(".safetensors"): p
        for p in (zoo / "objects").glob("*/*.safetensors")
        if not p.name.startswith(".")
    }


def temp_files(zoo: Path) -> list[Path]:
    return sorted((zoo / "objects").glob("*/.tmp-*"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed(h: Harness, zoo: Path) -> dict[str, str]:
    """`canon list --json` (in a child): name -> id."""
    run = h.run("list", "--json", "--zoo", str(zoo))
    assert run.returncode == 0, run
    return {e["name"]: e["id"] for e in run.json()["entries"]}


def verify(h: Harness, zoo: Path, *extra: str) -> dict[str, Any]:
    """`canon verify --json` (in a child): must exit 0 and report no damage; its report."""
    run = h.run("verify", "--json", *extra, "--zoo", str(zoo))
    report = json.loads(run.stdout) if run.stdout.strip().startswith("{") else {}
    assert run.returncode == 0, f"`canon verify {' '.join(extra)}` failed after a kill: {run}"
    assert report["bad_hashes"] == [] and report["missing_objects"] == [], report
    return report


def assert_intact(h: Harness, zoo: Path, before: dict[str, str]) -> dict[str, str]:
    """Every listed entry has its object and it hashes to its id; ``before`` is unchanged."""
    now = listed(h, zoo)
    present = objects(zoo)
    for name, sha in now.items():
        assert sha in present, f"entry `{name}` is listed but its object {sha} is missing"
        assert sha256(present[sha]) == sha, f"entry `{name}`'s object does not hash to its id"
    for name, sha in before.items():
        assert now.get(name) == sha, f"earlier entry `{name}` changed or vanished: {now}"
    return now


# -- targeted kills during `canon add` -----------------------------------------------------

# kill point -> what the kill leaves: "nothing", "temp" (a .tmp-* file), "orphan" (an object
# without an entry) or "entry" (the add was durable before the kill)
POINTS = {
    "put": "nothing",
    "temp-written": "temp",
    "renamed": "orphan",
    "before-commit": "orphan",
    "after-commit": "entry",
}


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_at_each_step_of_add(harness: Harness, base: Path, tmp_path: Path, point: str) -> None:
    zoo = copy_zoo(base, tmp_path / "zoo")
    before = listed(harness, zoo)
    objects_before = set(objects(zoo))
    new = net(tmp_path / "new.safetensors", 100)
    add = ["add", str(new), "--name", "new", *ADD, "--zoo", str(zoo), "--device", "cpu"]

    killed = harness.run(*add, kill_at=point)
    assert killed.returncode == KILLED, f"the kill point `{point}` was never reached: {killed}"

    leftovers = set(objects(zoo)) - objects_before
    temps = temp_files(zoo)
    expect = POINTS[point]
    assert len(temps) == (1 if expect == "temp" else 0), temps
    assert len(leftovers) == (1 if expect in ("orphan", "entry") else 0), leftovers

    report = verify(harness, zoo)  # garbage is reported, not an error
    assert len(report["orphan_temp_files"]) == len(temps), report
    assert set(report["orphan_objects"]) == (leftovers if expect == "orphan" else set()), report
    after = assert_intact(harness, zoo, before)
    assert ("new" in after) == (expect == "entry"), after

    rerun = harness.run(*add)
    if expect == "entry":  # the add was complete: re-running it says so, cleanly
        assert rerun.returncode == 1 and "already" in rerun.stderr, rerun
    else:
        assert rerun.returncode == 0, f"re-running the add after a kill at `{point}`: {rerun}"
    after = assert_intact(harness, zoo, before)
    assert after["new"] in objects(zoo)
    if expect in ("orphan", "entry"):
        assert leftovers == {after["new"]}  # the orphan was the new entry's object

    repaired = verify(harness, zoo, "--repair")
    assert len(repaired["repaired"]) == len(temps), repaired
    clean = verify(harness, zoo)
    assert clean["ok"] and not clean["orphan_objects"] and not clean["orphan_temp_files"], clean
    assert temp_files(zoo) == []
    assert set(objects(zoo)) == set(after.values())


def test_kill_point_that_does_not_exist_fails_loudly(harness: Harness, base: Path) -> None:
    """A renamed patch point is an error of its own (exit 97), never a silent pass."""
    run = harness.run("list", "--zoo", str(base), kill_at="before-commit", model="NoSuchModel")
    assert run.returncode == 97 and "NoSuchModel" in run.stderr, run


# -- random kills during `canon add` -------------------------------------------------------


def test_random_kills_during_add(harness: Harness, base: Path, tmp_path: Path) -> None:
    """20 adds, each SIGKILLed after a seeded random delay, into one zoo in turn."""
    zoo = copy_zoo(base, tmp_path / "zoo")
    before = listed(harness, zoo)
    rng = random.Random(20240611)

    def add(i: int) -> list[str]:
        path = tmp_path / f"r{i}.safetensors"
        if not path.exists():
            net(path, 1000 + i)
        return ["add", str(path), "--name", f"r{i}", *ADD, "--zoo", str(zoo), "--device", "cpu"]

    # uninterrupted adds: how long one takes, and when it writes (once the harness is warm)
    calibration = [harness.run(*add(-k), trace=True) for k in (1, 2)]
    assert all(run.returncode == 0 and run.trace for run in calibration), calibration
    duration = min(run.elapsed for run in calibration)
    timeline = calibration[-1].trace or {}
    writes = (timeline["put"], timeline.get("after-commit", duration))
    before = listed(harness, zoo)
    # half the delays anywhere in the add, half around its writes (a window of a few ms that
    # uniform delays would almost never hit; wide, since run times vary on a busy machine),
    # as fractions of an add's time, which the last uninterrupted add measures again (a
    # machine busy with other tests while calibrating, idle later, would see adds finish
    # before their kills)
    fractions = [
        rng.uniform(0.0, 0.9)
        if i % 2 == 0
        else rng.uniform(writes[0] / duration - 0.3, writes[1] / duration + 0.1)
        for i in range(RANDOM_KILLS)
    ]
    outcomes: list[str] = []
    for i in range(RANDOM_KILLS):
        known, temps = set(objects(zoo)), set(temp_files(zoo))
        run = harness.run(*add(i), kill_after=fractions[i] * duration)
        assert run.returncode in (KILLED, 0), run
        verify(harness, zoo)
        now = assert_intact(harness, zoo, before)
        if run.returncode == 0:
            outcome = "finished"
        elif f"r{i}" in now:
            outcome = "committed"
        elif set(objects(zoo)) - known:
            outcome = "orphan object"
        elif set(temp_files(zoo)) - temps:
            outcome = "temp file"
        else:
            outcome = "nothing"
        outcomes.append(outcome)

        rerun = harness.run(*add(i), "--json")
        if f"r{i}" in now:
            assert rerun.returncode == 1 and "already" in rerun.stderr, rerun
            before = now
        else:
            assert rerun.returncode == 0, f"re-running add r{i} after a kill: {rerun}"
            duration = rerun.elapsed  # an add's time as the machine runs now
            entry = rerun.json()["entry"]
            assert sha256(objects(zoo)[entry["id"]]) == entry["id"]
            before = {**now, f"r{i}": entry["id"]}

    verify(harness, zoo, "--repair")
    clean = verify(harness, zoo)
    assert clean["ok"] and not clean["orphan_objects"] and not clean["orphan_temp_files"], clean
    assert set(objects(zoo)) == set(assert_intact(harness, zoo, before).values())
    tally = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    print(f"random kills (an add takes {duration:.2f}s, writes at {timeline}): {tally}")
    assert outcomes.count("finished") <= RANDOM_KILLS // 2, tally  # the kills mostly landed


# -- a kill during `canon table` -----------------------------------------------------------


def table_json(run: Run) -> dict[str, Any]:
    """The table's names and matrix from `canon table --format json`."""
    assert run.returncode == 0, run
    table = json.loads(run.stdout)
    return {k: v for k, v in table.items() if k != "computed"}


def test_kill_during_table(harness: Harness, tmp_path: Path) -> None:
    """`canon table` caches pairs as it goes: a kill after the first keeps it; a rerun ends."""
    first = copy_zoo(EMBEDDED_ZOO, tmp_path / "fresh")
    before = listed(harness, first)  # rebuilds the index from the manifest
    table = ["table", *TABLE_NAMES, "--points", "3", "--format", "json", "--device", "cpu"]
    interrupted = copy_zoo(first, tmp_path / "interrupted")

    reference = table_json(harness.run(*table, "--zoo", str(first)))
    pairs = len(TABLE_NAMES) * (len(TABLE_NAMES) - 1) // 2

    killed = harness.run(
        *table, "--zoo", str(interrupted), kill_at="after-commit", model="PairCacheModel", nth=1
    )
    assert killed.returncode == KILLED, f"the table was not killed after a pair: {killed}"
    verify(harness, interrupted)
    assert_intact(harness, interrupted, before)

    rerun = harness.run(*table, "--zoo", str(interrupted))
    assert table_json(rerun) == reference
    assert f"{pairs - 1} pair(s) computed" in rerun.stderr, rerun  # the cached pair was kept
    clean = verify(harness, interrupted)
    assert clean["ok"], clean


# -- memory of an add with a lying config --------------------------------------------------

MEMORY_LIMIT_MB = 300  # MiB of peak resident memory
HONEST = {"in_features": 64, "hidden": [256, 256], "classes": 10}  # 85,002 float32: 340 KB
LIES = {  # configs the 64-256-256-10 file does not fit
    "issue": {"in_features": 64, "hidden": [4_000_000]},  # a 4,000,000 x 64 layer: 1 GiB
    "1M": {"in_features": 64, "hidden": [1_000_000]},  # 280 MB of float32, within any limit
}


# runs a command and prints its exit status and peak RSS: a small process of its own, since
# a child forked from this (big) test process would count this process's memory as its own
MEASURE = (
    "import json, resource, subprocess, sys; "
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
    "print(json.dumps([code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
)


def peak_rss(cmd: list[str]) -> tuple[int, float, str]:
    """Run ``cmd``; (exit status, its peak RSS in MiB, its stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    code, kib = json.loads(proc.stdout.splitlines()[-1])  # Linux: ru_maxrss is in KiB
    return code, kib / 1024, proc.stderr


@pytest.mark.parametrize(
    "lie",
    # two processes importing torch each (a memory measurement); the in-process refusals of
    # lying configs stay fast in tests/test_hostile.py and tests/test_limits.py
    [pytest.param(k, marks=pytest.mark.slow) for k in LIES],
)
def test_lying_config_add_refuses_within_memory(tmp_path: Path, lie: str) -> None:
    """The add is refused (exit 1, a one-line error) and never builds the config's model."""
    zoo = tmp_path / "zoo"
    invoke("init", "--zoo", str(zoo))
    path = net(tmp_path / "honest.safetensors", 0, HONEST)
    assert 300_000 < path.stat().st_size < 400_000
    code, peak, err = peak_rss(
        [sys.executable, "-m", "canon", "add", str(path), "--name", "liar", "--arch", "mlp",
         "--config", json.dumps(LIES[lie]), "--zoo", str(zoo), "--device", "cpu"]
    )  # fmt: skip
    print(f"peak RSS of the lying add: {peak:.0f} MiB")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "internal error" not in err, err
    if peak >= MEMORY_LIMIT_MB:  # what importing alone costs, for the message
        _, floor, _ = peak_rss([sys.executable, "-c", "import torch, canon.cli"])
        pytest.fail(
            f"`canon add` with a lying config peaked at {peak:.0f} MiB (limit "
            f"{MEMORY_LIMIT_MB} MiB; `import torch, canon.cli` alone: {floor:.0f} MiB): "
            + err.strip()
        )

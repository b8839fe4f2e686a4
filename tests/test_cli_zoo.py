"""The zoo commands end to end: subprocesses on a temporary zoo, CliRunner for the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import canon
from canon.cli import cli

CONFIG = {"in_features": 64, "hidden": [16], "classes": 10}
ARCH = ["--arch", "mlp", "--config", json.dumps(CONFIG)]


def checkpoint(path: Path, seed: int, nan: bool = False) -> Path:
    """A random 64-16-10 MLP saved as safetensors (optionally with a NaN weight)."""
    torch.manual_seed(seed)
    state = canon.build_model("mlp", CONFIG).state_dict()
    if nan:
        state["fc1.weight"][0, 0] = float("nan")
    canon.save_state(state, path)
    return path


def spawn(zoo: Path, *args: str) -> subprocess.Popen[str]:
    """Start `python -m canon ARGS` on ``zoo`` (through $CANON_ZOO)."""
    env = {**os.environ, "CANON_ZOO": str(zoo)}
    cmd = [sys.executable, "-m", "canon", *args, "--device", "cpu"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(*procs: subprocess.Popen[str]) -> list[str]:
    """Wait for the processes; each must exit 0. Their stdouts."""
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def invoke(zoo: Path, *args: str, code: int = 0) -> str:
    """Run a command in-process on ``zoo``; check the exit code; its stdout."""
    result = CliRunner().invoke(cli, [*args, "--zoo", str(zoo), "--device", "cpu"])
    assert result.exit_code == code, (args, result.output)
    return result.stdout


def one_line_error(zoo: Path, *args: str) -> str:
    """Run a command that must fail with exit code 1 and a single output line; the line."""
    result = CliRunner().invoke(cli, [*args, "--zoo", str(zoo), "--device", "cpu"])
    assert result.exit_code == 1, (args, result.output)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """An empty zoo made in-process."""
    path = tmp_path / "zoo"
    invoke(path, "init")
    return path


@pytest.mark.slow  # six `canon` processes; the in-process tests below cover the same commands
def test_subprocess_flow(tmp_path: Path) -> None:
    """Concurrent adds, compare --json, table csv as processes; then list/show/rm/verify."""
    zoo = tmp_path / "zoo"
    a, b = checkpoint(tmp_path / "a.safetensors", 0), checkpoint(tmp_path / "b.safetensors", 1)
    assert "created" in invoke(zoo, "init")
    common = [*ARCH, "--dataset", "digits"]
    added = finish(
        spawn(zoo, "add", str(a), "--name", "net-a", *common, "--tag", "algo=sgd"),
        spawn(zoo, "add", str(b), "--name", "net-b", *common, "--tag", "algo=adv"),
    )
    assert "net-a" in added[0] and "train_error" in added[0]
    compared, csv = finish(
        spawn(zoo, "compare", "net-a", "net-b", "--json", "--points", "5"),
        spawn(zoo, "table", "--format", "csv", "--points", "5"),
    )
    result = json.loads(compared)
    assert set(result["curves"]) == {"linear", "linear_aligned", "geodesic"}
    assert result["distances"]["geodesic"] > 0
    assert csv.splitlines()[0] == ",net-a,net-b"
    entries = json.loads(invoke(zoo, "list", "--json"))["entries"]
    assert [e["name"] for e in entries] == ["net-a", "net-b"]
    assert 0 <= entries[0]["metrics"]["test_error"] <= 1
    assert [
        e["name"] for e in json.loads(invoke(zoo, "list", "--tag", "algo=adv", "--json"))["entries"]
    ] == ["net-b"]
    shown = invoke(zoo, "show", "net-b")
    assert "reference `net-" in shown and "algo=adv" in shown
    ref = json.loads(invoke(zoo, "show", "net-b", "--json"))["reference"]
    other = ({"net-a", "net-b"} - {ref}).pop()  # the first add to commit is the reference
    assert f"removed `{other}`" in invoke(zoo, "rm", other)
    assert invoke(zoo, "verify").startswith("ok: 1 objects")
    assert other not in invoke(zoo, "list")


def test_train_energy_plane_midpoint(zoo: Path, tmp_path: Path) -> None:
    """train adds tagged entries with errors; energy, plane, midpoint, reference work on them."""
    for seed in (0, 1):
        out = invoke(
            zoo, "train", *ARCH, "--dataset", "digits", "--algo", "sgd", "--seed", str(seed),
            "--epochs", "3", "--name", f"s{seed}", "--tag", "run=t", "--json",
        )  # fmt: skip
        entry = json.loads(out)["entry"]
        assert entry["tags"] == {"algo": "sgd", "seed": str(seed), "run": "t"}
        assert entry["metrics"]["train_error"] < 0.8 and "test_error" in entry["metrics"]
    energy = json.loads(invoke(zoo, "energy", "s0", "--sigma", "0.1", "--draws", "2", "--json"))
    assert energy["sigmas"] == [0.1] and len(energy["mean"]) == 1
    out = invoke(
        zoo, "midpoint", "s0", "s1", "--name", "m", "--epochs", "1", "--path", "linear",
        "--lr", "0.01", "--lr-halvings", "0",
    )  # fmt: skip
    assert "bend barrier" in out
    grid = json.loads(invoke(zoo, "plane", "s0", "s1", "m", "--grid", "3", "--json"))
    assert len(grid["errors"]) == 3 and len(grid["errors"][0]) == 3
    text = invoke(zoo, "plane", "s0", "m", "s1", "--grid", "3", "--margin", "0")
    assert "train error (%)" in text and "B at alpha" in text
    rows = [line.split() for line in text.splitlines()[-3:]]
    assert sorted(t for row in rows for t in row if t.isalpha()) == ["A", "B", "C"]
    # A and B lie on the first axis (beta 0, the first column without a margin)
    assert {row[2] for row in rows if row[2].isalpha()} == {"A", "B"}
    assert "not on one line" in one_line_error(zoo, "plane", "s0", "s1", "s0", "--grid", "2")
    shown = json.loads(invoke(zoo, "show", "m", "--json"))
    assert shown["kind"] == "midpoint" and shown["parent_names"] == ["s0", "s1"]
    assert "bend_barrier" in shown["metrics"]
    assert shown["metrics"]["lr"] == 0.01 and shown["metrics"]["restarts"] == 0
    assert "is a parent of `m`" in one_line_error(zoo, "rm", "s1")
    assert [
        e["name"]
        for e in json.loads(invoke(zoo, "list", "--kind", "midpoint", "--json"))["entries"]
    ] == ["m"]
    assert "`s0` is the reference" in invoke(zoo, "reference", "show", "s1")
    assert "`s1` is now the reference" in invoke(zoo, "reference", "set", "s1")
    assert json.loads(invoke(zoo, "reference", "show", "s0", "--json"))["reference"] == "s1"
    table = invoke(zoo, "table", "s0", "s1", "--metric", "euclidean")
    assert table.startswith("euclidean") and "[1]" in table
    for kind, names in (("solution", ["s0", "s1"]), ("any", ["m", "s0", "s1"])):
        out = invoke(zoo, "table", "--kind", kind, "--metric", "euclidean", "--json")
        assert json.loads(out)["names"] == names
    plot = tmp_path / "curves.png"
    invoke(zoo, "compare", "s0", "s1", "--path", "linear", "--points", "5", "--plot", str(plot))
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_errors_are_one_line_exit_1(zoo: Path, tmp_path: Path) -> None:
    """Unknown entries (did you mean), bad JSON, bad tags, bad paths: exit 1, one line."""
    good = checkpoint(tmp_path / "g.safetensors", 0)
    invoke(zoo, "add", str(good), "--name", "alpha", *ARCH)
    cases = [
        (["show", "alpah"], "did you mean `alpha`"),
        (["compare", "alpha", "alpah"], "did you mean `alpha`"),
        (["add", str(good), "--name", "x", "--arch", "mlp", "--config", "{"], "not valid JSON"),
        (["add", str(good), "--name", "x", *ARCH, "--tag", "novalue"], "KEY=VALUE"),
        (["list", "--tag", "=v"], "KEY=VALUE"),
        (["add", str(good), "--name", "x", *ARCH], "already in the zoo as `alpha`"),
        (["add", str(tmp_path / "none.safetensors"), "--name", "x", *ARCH], "does not exist"),
        (["compare", "alpha", "alpha", "--plot", "x.gif"], "`--plot` must end in"),
        (["table", "alpha"], "at least two entries"),
    ]
    for args, text in cases:
        assert text in one_line_error(zoo, *args), args
    missing = tmp_path / "nozoo"
    assert "canon init" in one_line_error(missing, "list")
    assert not missing.exists()


def test_nan_checkpoint_leaves_zoo_unchanged(zoo: Path, tmp_path: Path) -> None:
    """Adding a checkpoint with NaN fails with exit 1 and writes nothing."""
    before = sorted(p.name for p in (zoo / "objects").rglob("*"))
    bad = checkpoint(tmp_path / "bad.safetensors", 0, nan=True)
    line = one_line_error(zoo, "add", str(bad), "--name", "bad", *ARCH, "--dataset", "digits")
    assert "nan" in line.lower()
    assert sorted(p.name for p in (zoo / "objects").rglob("*")) == before
    assert json.loads(invoke(zoo, "list", "--json"))["entries"] == []
    assert "already exists (0 entries)" in invoke(zoo, "init")


def test_verify_reports_missing_object(zoo: Path, tmp_path: Path) -> None:
    """verify exits 1 with a summary when an object is gone; --json still prints the report."""
    invoke(zoo, "add", str(checkpoint(tmp_path / "a.safetensors", 3)), "--name", "a", *ARCH)
    for obj in (zoo / "objects").rglob("*.safetensors"):
        obj.unlink()
    assert "1 missing objects" in one_line_error(zoo, "verify")
    result = CliRunner().invoke(cli, ["verify", "--json", "--zoo", str(zoo)])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["missing_objects"]

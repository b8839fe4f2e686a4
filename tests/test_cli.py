"""The command line: the demo, the spec command, errors as one line with exit code 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from canon.cli import cli


def test_demo_json_shows_collapse():
    """`canon demo --json`: copies are far apart raw, identical after canonicalization."""
    result = CliRunner().invoke(cli, ["demo", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert {r["architecture"] for r in rows} >= {"mlp", "lenet", "vgg", "binary_mlp", "committee"}
    for row in rows:
        assert row["raw_distance"] > 0.5
        assert row["canonical_distance"] < 1e-5
        assert row["same_predictions"] == 1.0


# a real process importing torch; test_demo_json_shows_collapse runs it in-process
@pytest.mark.slow
def test_demo_runs_as_a_subprocess():
    """The installed console entry point runs the demo and prints a table."""
    out = subprocess.run(
        [sys.executable, "-m", "canon", "demo", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "canon dist" in out.stdout and "lenet" in out.stdout


def test_spec_command():
    """`canon spec` prints groups and symmetries; --json gives the spec dict."""
    runner = CliRunner()
    result = runner.invoke(cli, ["spec", "binary_conv", "--config", '{"input_size": 20}'])
    assert result.exit_code == 0, result.output
    assert "group conv1: 20 units, symmetry none, scale-invariant" in result.output
    result = runner.invoke(cli, ["spec", "mlp", "--json"])
    assert json.loads(result.output)["spec"]["groups"][0]["name"] == "fc1"


def test_bad_input_is_one_line_exit_1():
    """Unknown architectures, bad JSON and bad devices give one error line and exit code 1."""
    runner = CliRunner()
    for args, text in [
        (["spec", "mpl"], "did you mean `mlp`"),
        (["spec", "mlp", "--config", "{"], "`--config` is not valid JSON"),
        (["spec", "mlp", "--config", "[1]"], "must be a JSON object"),
        (["demo", "--device", "tpu"], "unknown device `tpu`"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and text in lines[0], (args, result.output)


def test_train_stops_early_unless_told_to_run_every_epoch(tmp_path):
    """`canon train` stops at --target-error by default; --no-early-stop runs every epoch
    (the paper's protocol, which its help names); the two options exclude each other."""
    runner = CliRunner()
    common = [
        "train", "--arch", "mlp", "--config", json.dumps({"in_features": 64, "hidden": [16],
        "classes": 10}), "--dataset", "digits", "--epochs", "6", "--zoo", str(tmp_path / "zoo"),
        "--device", "cpu", "--json",
    ]  # fmt: skip
    assert runner.invoke(cli, ["init", "--zoo", str(tmp_path / "zoo")]).exit_code == 0
    runs = {}
    for name, extra in (("early", ["--target-error", "0.5"]), ("full", ["--no-early-stop"])):
        result = runner.invoke(cli, [*common, "--name", name, *extra])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads(result.stdout)["epochs"]
    assert runs["early"] < 6 and runs["full"] == 6
    clash = runner.invoke(cli, [*common, "--name", "x", "--target-error", "0.1", "--no-early-stop"])
    assert clash.exit_code == 2 and "exclude each other" in clash.output
    help_text = " ".join(runner.invoke(cli, ["train", "--help"]).output.split())
    assert "The paper's protocol (appendix A.1) runs every epoch" in help_text


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("0", "0")])
def test_the_command_asks_for_huge_pages_unless_told_otherwise(given, expected):
    """The entry point sets THP_MEM_ALLOC_ENABLE=1 for the torch it imports later, and keeps
    a value the user set (``0`` turns huge pages off)."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if given is not None:
        env["THP_MEM_ALLOC_ENABLE"] = given
    script = (
        "import atexit, os\n"
        "atexit.register(lambda: print('THP', os.environ.get('THP_MEM_ALLOC_ENABLE')))\n"
        "from canon.cli import main\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, "--version"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["THP", expected]

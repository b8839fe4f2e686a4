"""`canon repro --quick`: the reproduction runs from nothing and writes a complete report."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from canon.cli import cli
from canon.errors import ConfigError
from canon.repro import make_plan, run_reproduction

CLAIM_IDS = [f"{n}-{net}" for n in range(1, 6) for net in ("mlp", "lenet")] + ["6"]
ROW = re.compile(r"^\| (?P<id>[\w-]+) \| (?P<cells>.*) \| \*\*(?P<verdict>yes|no)\*\* \|$")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One quick reproduction through the command line, its JSON answer and its folder."""
    out = tmp_path_factory.mktemp("repro") / "report"
    result = CliRunner().invoke(
        cli, ["repro", "--quick", "--out", str(out), "--json", "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


@pytest.mark.slow  # the quick reproduction (module fixture) trains for minutes
def test_report_has_every_claim_with_numbers_and_verdict(run):
    """Each claim has a row in the report's table with a measured number and yes or no."""
    payload, out = run
    text = (out / "reproduction.md").read_text()
    rows = {m["id"]: m for m in map(ROW.match, text.splitlines()) if m}
    assert sorted(rows) == sorted(CLAIM_IDS)
    claims = {c["id"]: c for c in payload["claims"]}
    for claim_id, row in rows.items():
        measured = row["cells"].split(" | ")[-1]
        assert re.search(r"\d+\.\d+%|\d+\.\d+", measured), measured
        assert row["verdict"] == ("yes" if claims[claim_id]["holds"] else "no")
    held = sum(c["holds"] for c in payload["claims"])
    assert f"**{held} of {len(CLAIM_IDS)} checks hold.**" in text


@pytest.mark.slow  # the quick reproduction (module fixture) trains for minutes
def test_figures_exist_and_are_referenced(run):
    """Every figure is a PNG under figures/ and the report shows it."""
    payload, out = run
    text = (out / "reproduction.md").read_text()
    figures = [Path(f) for f in payload["figures"]]
    assert len(figures) == 13
    for figure in figures:
        assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert f"](figures/{figure.name})" in text
    referenced = re.findall(r"\]\((figures/[^)]+)\)", text)
    assert sorted(referenced) == sorted(f"figures/{f.name}" for f in figures)


@pytest.mark.slow  # the quick reproduction (module fixture) trains for minutes
def test_report_records_settings_and_time(run):
    """The report says how it was made: command, mode, wall time; the JSON file matches."""
    payload, out = run
    text = (out / "reproduction.md").read_text()
    assert "`canon repro --quick" in text and "Mode: **quick**" in text
    assert re.search(r"in \*\*\d+ min \d\d s\*\*", text)
    recorded = payload["wall_seconds"]  # recorded; how long it takes is for a benchmark
    assert isinstance(recorded, float) and recorded > 0
    saved = json.loads((out / "reproduction.json").read_text())
    assert [c["id"] for c in saved["claims"]] == [c["id"] for c in payload["claims"]]
    assert saved["settings"]["plan"]["quick"] is True


@pytest.mark.slow  # the quick reproduction (module fixture) trains for minutes
def test_verdicts_follow_the_numbers(run):
    """Each verdict is the stated comparison of its measured values (nothing else decides)."""
    payload, _ = run
    for claim in payload["claims"]:
        v = claim["values"]
        kind = claim["id"].split("-")[0]
        if kind == "1":
            expected = v["linear_aligned"] < v["linear"]
        elif kind in ("2", "4"):
            expected = v["rsgd-rsgd"] < v["sgd-sgd"] < v["adv-adv"]
        elif kind == "3":
            expected = max(v["bend"], v["bend_linear_aligned"]) < v["near_zero"]
        elif kind == "5":
            energy, test = v["local_energy"], v["test_error"]
            expected = (energy["rsgd"] < energy["sgd"] < energy["adv"]) and (
                test["rsgd"] < test["sgd"] < test["adv"]
            )
        else:
            barriers = v["random_flip"]
            expected = all(a > b for a, b in itertools.pairwise(barriers))
        assert claim["holds"] == expected, claim


def test_zoo_folder_must_be_empty(tmp_path):
    """A zoo folder that already holds files is refused before any training."""
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "canon.sqlite").write_text("")
    with pytest.raises(ConfigError, match="must be new or empty"):
        run_reproduction(tmp_path / "out", quick=True, zoo_dir=tmp_path / "zoo")
    assert not (tmp_path / "out").exists()


def test_plans_full_and_quick():
    """The full plan uses the paper's networks and HMM sizes; quick is a smaller copy."""
    full, quick = make_plan(), make_plan(quick=True)
    assert [n.label for n in full.nets] == [n.label for n in quick.nets] == ["mlp", "lenet"]
    assert full.nets[1].config == {"channels": [20, 50], "hidden": 500}
    assert (full.binary.D, full.binary.P, full.binary.hidden) == (501, 1503, 101)
    assert len(full.binary.ratios) >= 2 and full.binary.ratios == tuple(sorted(full.binary.ratios))
    assert quick.seeds_per_algo <= full.seeds_per_algo and quick.points <= full.points

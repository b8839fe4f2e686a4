"""`canon repro --quick`: the reproduction runs from nothing and writes a complete report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from canon.cli import cli
from canon.errors import ConfigError
from canon.repro import Claim, ReproductionResult, make_plan, run_reproduction

CLAIM_IDS = [f"{n}-{net}" for n in (1, 2, 3, 4, 5, 7) for net in ("mlp", "lenet")] + ["6"]
VERDICTS = ("holds", "does not hold", "inconclusive at this scale")
ROW = re.compile(
    r"^\| (?P<id>[\w-]+) \| (?P<cells>.*) \| \*\*(?P<verdict>holds|does not hold|"
    r"inconclusive at this scale)\*\* \|$"
)


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
    """Each claim has a row in the report's table with a measured number, its bootstrap
    interval and one of the three verdicts."""
    payload, out = run
    text = (out / "reproduction.md").read_text()
    rows = {m["id"]: m for m in map(ROW.match, text.splitlines()) if m}
    assert sorted(rows) == sorted(CLAIM_IDS)
    claims = {c["id"]: c for c in payload["claims"]}
    for claim_id, row in rows.items():
        measured = row["cells"].split(" | ")[-1]
        assert re.search(r"\d+\.\d+%|\d+\.\d+", measured), measured
        assert "95% bootstrap intervals" in measured
        assert row["verdict"] == claims[claim_id]["verdict"]
    counts = ", ".join(f"{sum(c['verdict'] == v for c in payload['claims'])} {v}" for v in VERDICTS)
    assert f"**{len(CLAIM_IDS)} checks: {counts}.**" in text


@pytest.mark.slow  # the quick reproduction (module fixture) trains for minutes
def test_figures_exist_and_are_referenced(run):
    """Every figure is a PNG under figures/ and the report shows it."""
    payload, out = run
    text = (out / "reproduction.md").read_text()
    figures = [Path(f) for f in payload["figures"]]
    assert len(figures) == 15
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
    """Each verdict follows from its checks' intervals (nothing else decides): all above 0
    and beyond the tie tolerance: holds; one below 0 and beyond it: does not hold; else
    inconclusive."""
    payload, _ = run
    for claim in payload["claims"]:
        verdicts = []
        for e in claim["values"]["evidence"]:
            low, high, estimate, tie = e["low"], e["high"], e["estimate"], e["tolerance"]
            if low is not None and low > 0 and estimate > tie:
                verdicts.append("holds")
            elif high is not None and high < 0 and estimate < -tie:
                verdicts.append("does not hold")
            else:
                verdicts.append("inconclusive at this scale")
            assert e["verdict"] == verdicts[-1], e
        if verdicts and all(v == "holds" for v in verdicts):
            expected = "holds"
        elif "does not hold" in verdicts:
            expected = "does not hold"
        else:
            expected = "inconclusive at this scale"
        assert claim["verdict"] == expected, claim
        assert claim["holds"] == (expected == "holds")


def test_zoo_folder_must_be_empty(tmp_path):
    """A zoo folder that already holds files is refused before any training."""
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "canon.sqlite").write_text("")
    with pytest.raises(ConfigError, match="must be new or empty"):
        run_reproduction(tmp_path / "out", quick=True, zoo_dir=tmp_path / "zoo")
    assert not (tmp_path / "out").exists()


def test_plans_full_and_quick():
    """The full plan uses the paper's networks, HMM sizes and protocols (every epoch, budgets
    scaled by one factor, at least 5 solutions per algorithm); quick is a smaller copy."""
    full, quick = make_plan(), make_plan(quick=True)
    assert full.target_error is None and full.seeds_per_algo >= 5
    assert full.binary.seeds_per_algo >= 5 and full.pairs_per_class >= 5
    scale = full.epoch_scale
    assert full.nets[0].epochs == full.midpoint_epochs == round(300 * scale)
    assert (full.binary.epochs, full.binary.adv_epochs) == (round(200 * scale), round(500 * scale))
    assert all(n.adv_lr == 0.02 for n in full.nets)
    assert [n.label for n in full.nets] == [n.label for n in quick.nets] == ["mlp", "lenet"]
    assert full.nets[1].config == {"channels": [20, 50], "hidden": 500}
    assert (full.binary.D, full.binary.P, full.binary.hidden) == (501, 1503, 101)
    assert len(full.binary.ratios) >= 2 and full.binary.ratios == tuple(sorted(full.binary.ratios))
    assert quick.seeds_per_algo <= full.seeds_per_algo and quick.points <= full.points
    paper = make_plan(epoch_scale=1)  # `canon repro --epoch-scale 1`: the paper's budgets
    assert (paper.nets[0].epochs, paper.nets[0].adv_epochs, paper.midpoint_epochs) == (300,) * 3
    assert (paper.binary.epochs, paper.binary.adv_epochs) == (200, 500)


def test_epoch_scale_is_checked_before_anything_runs(tmp_path):
    """`--epoch-scale` is a fraction of the paper's budgets: 0 or above 1 is refused."""
    for bad in ("0", "1.5"):
        done = CliRunner().invoke(cli, ["repro", "--epoch-scale", bad, "--out", str(tmp_path)])
        assert done.exit_code == 2 and "--epoch-scale" in done.output
    assert not any(tmp_path.iterdir())


def test_summary_prints_each_claims_verdict(tmp_path):
    """What `canon repro` prints: the count of each verdict, then every claim with its
    three-way verdict (not a yes/no)."""
    claims = [
        Claim(str(k), f"claim {k}", "paper", "scope", f"measured {k}", verdict)
        for k, verdict in enumerate(VERDICTS)
    ]
    result = ReproductionResult(tmp_path / "r.md", tmp_path / "r.json", [], claims, 90.0)
    lines = result.summary().splitlines()
    assert lines[0].endswith(
        "1.5 min; 3 checks: 1 holds, 1 does not hold, 1 inconclusive at this scale"
    )
    assert lines[1:] == [
        "  [holds] (0) claim 0: measured 0",
        "  [does not hold] (1) claim 1: measured 1",
        "  [inconclusive at this scale] (2) claim 2: measured 2",
    ]

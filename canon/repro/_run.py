"""``run_reproduction``: the whole reproduction from nothing to the written report."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canon.errors import ConfigError
from canon.repro._claims import Claim, evaluate_claims
from canon.repro._figures import draw_figures
from canon.repro._pipeline import Stage, measure
from canon.repro._plan import make_plan
from canon.repro._report import render_report
from canon.repro._stats import count_verdicts

__all__ = ["REPORT", "ReproductionResult", "run_reproduction"]

REPORT = "reproduction.md"
DATA = "reproduction.json"


@dataclass(frozen=True)
class ReproductionResult:
    """What a run wrote and found: the report, its figures, the claims and the time taken."""

    report: Path
    data: Path
    figures: list[Path]
    claims: list[Claim]
    wall_seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """What ``canon repro`` prints: where the report went, the count of each verdict,
        then each claim with its verdict and what was measured."""
        counts = count_verdicts([c.verdict for c in self.claims])
        lines = [
            f"wrote {self.report} ({len(self.figures)} figures) in "
            f"{self.wall_seconds / 60:.1f} min; {len(self.claims)} checks: {counts}"
        ]
        lines += [f"  [{c.verdict}] ({c.id}) {c.claim}: {c.measured}" for c in self.claims]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "report": str(self.report),
            "data": str(self.data),
            "figures": [str(f) for f in self.figures],
            "claims": [c.to_dict() for c in self.claims],
            "holding": sum(c.holds for c in self.claims),
            "wall_seconds": self.wall_seconds,
            "settings": self.settings,
        }


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    return (
        f"{os.cpu_count()} CPU core(s) ({cpu}), torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}"
    )


def _empty_zoo_dir(path: Path) -> Path:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"the zoo folder `{path}` must be new or empty; the repro starts from nothing"
        )
    return path


def run_reproduction(
    out_dir: str | os.PathLike[str],
    *,
    quick: bool = False,
    seed: int = 0,
    device: str = "auto",
    zoo_dir: str | os.PathLike[str] | None = None,
    progress: Stage | None = None,
    command: str | None = None,
    epoch_scale: float | None = None,
) -> ReproductionResult:
    """Run the reproduction and write ``reproduction.md`` (with ``figures/``) to ``out_dir``.

    ``quick`` runs the small plan (for CI, a few minutes) instead of the full one
    (at most 45 minutes on 2 CPU cores). The networks go into a fresh zoo at
    ``zoo_dir`` (which must be new or empty; default: a temporary folder, removed
    afterwards). ``progress(stage, done, total)`` is called after every step.
    ``command`` is how the run was started, for the report. ``epoch_scale`` sets every
    training budget as a fraction of the paper's (default: the plan's, 1, the paper's
    own, for the full run and 1/60 for the quick one).
    """
    from canon.device import resolve_device

    out = Path(out_dir)
    plan = make_plan(quick, epoch_scale)
    dev = str(resolve_device(device))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="canon-repro-") as scratch:
        from canon.zoo import Zoo

        folder = _empty_zoo_dir(Path(zoo_dir)) if zoo_dir is not None else Path(scratch) / "zoo"
        with Zoo.open(folder) as zoo:
            results = measure(zoo, plan, seed=seed, device=dev, progress=progress)
            if zoo_dir is not None:
                zoo.write_manifest()
    claims = evaluate_claims(results)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(results, out)
    wall = time.perf_counter() - start
    scale = "" if epoch_scale is None else f" --epoch-scale {epoch_scale:g}"
    how = command or f"canon repro{' --quick' if quick else ''} --seed {seed}{scale}"
    report = out / REPORT
    report.write_text(
        render_report(results, claims, figures, wall_seconds=wall, machine=_machine(), command=how)
    )
    settings = {"plan": plan.to_dict(), "seed": seed, "device": dev}
    result = ReproductionResult(
        report=report,
        data=out / DATA,
        figures=[out / f.file for f in figures.values()],
        claims=claims,
        wall_seconds=wall,
        settings=settings,
    )
    result.data.write_text(json.dumps(_finite(result.to_dict()), indent=2) + "\n")
    return result


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value

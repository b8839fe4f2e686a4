"""The paper's qualitative claims, each checked on the measurements into a record with
the numbers measured here, their seeded bootstrap intervals (or Spearman rank
correlations where the paper claims a correlation) and one of three verdicts:
holds, does not hold, inconclusive at this scale (:mod:`canon.repro._stats`).
Thresholds, tolerances and orders are fixed in advance (never adjusted to the
results)."""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from canon._format import pct
from canon.repro._plan import ALGOS
from canon.repro._stats import (
    HOLDS,
    Evidence,
    combine,
    correlation,
    difference,
    mean_above,
    paired,
)

if TYPE_CHECKING:
    from canon.engine import PathCurve
    from canon.repro._pipeline import Measurements, NetResults

__all__ = ["Claim", "evaluate_claims", "mean", "pct"]

WITHIN = ("rsgd-rsgd", "sgd-sgd", "adv-adv")

#: Each claim by number: what it says, and where and how the paper says it.
_STATEMENTS: dict[int, tuple[str, str]] = {
    1: (
        "Alignment lowers linear-path barriers",
        "Sec. 4.2, Fig. 2 (top row): taking the permutation symmetry into account lowers "
        "the barriers along linear paths.",
    ),
    2: (
        "Geodesic barriers rank rsgd-rsgd < sgd-sgd < adv-adv",
        "Sec. 4.2, Fig. 2: along geodesics the barrier heights follow the flatness of the "
        "solutions, RSGD-RSGD lowest and ADV-ADV highest.",
    ),
    3: (
        "Optimized single-bend barriers after alignment are near zero",
        "Sec. 4.2, Fig. 3: removing the permutation symmetry lowers the barriers of "
        "single-bend optimized paths and in most cases removes them entirely.",
    ),
    4: (
        "Flatter solutions are closer to each other (normalized, aligned distance)",
        "Sec. 4.2, Fig. 5: when networks are normalized and aligned, flatter solutions "
        "are closer to each other than sharper ones.",
    ),
    5: (
        "Local energy ranks rsgd < sgd < adv and tracks test error",
        "Sec. 4.1, Fig. 1: the local energy follows the ranking RSGD < SGD < ADV and "
        "correlates with the test error (flatter minima generalize better).",
    ),
    6: (
        "Binary committee machine: barriers shrink as N/D grows",
        "Sec. 5.1, Fig. 6: as the number of parameters grows, the mean maximum train error "
        "along random shortest paths between solutions decreases (barriers go to zero).",
    ),
    7: (
        "Optimized midpoints are closer to the flatter endpoint",
        "Sec. 4.2, Fig. 5 (middle and right): in optimized paths, the optimized midpoints "
        "end up closer to the flatter solutions (normalized, aligned Euclidean distance).",
    ),
}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper checked on one setting: what was measured, the evidence (each
    check's estimate and 95% bootstrap interval) and the verdict (:data:`~canon.repro._stats.
    VERDICTS`)."""

    id: str
    claim: str
    paper: str
    scope: str
    measured: str
    verdict: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        """Whether the verdict is ``holds``."""
        return self.verdict == HOLDS

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``holds`` included)."""
        return {**asdict(self), "holds": self.holds}


def mean(values: Sequence[float]) -> float:
    """The mean, NaN for no values."""
    return statistics.fmean(values) if values else math.nan


def _barriers(curves: Mapping[str, Sequence[PathCurve]], kind: str) -> dict[str, list[float]]:
    return {
        cls: [c.barrier for c in group if c.kind == kind]
        for cls, group in curves.items()
        if any(c.kind == kind for c in group)
    }


def _ranking(groups: Mapping[str, Sequence[float]], percent: bool = True) -> str:
    """Per class: mean ± std (count), in percent or plain."""

    def text(value: float) -> str:
        return pct(value) if percent else f"{value:.3f}"

    parts = []
    for cls, values in groups.items():
        spread = statistics.pstdev(values) if len(values) > 1 else 0.0
        parts.append(f"{cls} {text(mean(values))} ± {text(spread)} ({len(values)})")
    return ", ".join(parts)


def _means(groups: Mapping[str, Sequence[float]]) -> dict[str, float]:
    return {cls: mean(values) for cls, values in groups.items()}


def _interval(e: Evidence, percent: bool) -> str:
    """An estimate with its interval, e.g. ``0.42% [0.10%, 0.80%]``."""

    def text(value: float) -> str:
        return pct(value) if percent else f"{value:.3g}"

    return f"{text(e.estimate)} [{text(e.low)}, {text(e.high)}]"


class _Finding(NamedTuple):
    """What checking a claim found: the numbers in words, the evidence, the numbers."""

    measured: str
    evidence: list[Evidence]
    values: dict[str, Any]


def _claim(id: str, number: int, scope: str, finding: _Finding) -> Claim:
    """Claim ``number`` (:data:`_STATEMENTS`) checked on the setting ``scope``."""
    claim, paper = _STATEMENTS[number]
    checks = "; ".join(
        f"{e.what}: {_interval(e, e.what.endswith('%'))} → {e.verdict}" for e in finding.evidence
    )
    values = {**finding.values, "evidence": [e.to_dict() for e in finding.evidence]}
    measured = f"{finding.measured}. 95% bootstrap intervals: {checks}"
    return Claim(id, claim, paper, scope, measured, combine(finding.evidence), values)


def _ranked(
    what: str,
    groups: Mapping[str, Sequence[float]],
    order: Sequence[str],
    *,
    percent: bool,
    tolerance: float = 0.0,
    seed: int,
) -> _Finding:
    """Whether the classes of ``order`` rank in that order: the difference of the means of
    each adjacent two (the later minus the earlier), with its bootstrap interval."""
    chosen = {cls: list(groups.get(cls, [])) for cls in order}
    unit = " %" if percent else ""
    evidence = [
        difference(f"{b} - {a}{unit}", chosen[a], chosen[b], tolerance=tolerance, seed=seed + k)
        for k, (a, b) in enumerate(itertools.pairwise(order))
    ]
    measured = f"{what}, mean ± std (count): " + _ranking(chosen, percent)
    return _Finding(measured, evidence, _means(chosen))


def _alignment(net: NetResults, seed: int) -> _Finding:
    raw = [b for group in _barriers(net.curves, "linear").values() for b in group]
    aligned = [b for group in _barriers(net.curves, "linear_aligned").values() for b in group]
    gains = [r - a for r, a in zip(raw, aligned, strict=True)]
    lower = sum(g > 0 for g in gains)
    return _Finding(
        f"mean barrier over {len(raw)} pairs: linear {pct(mean(raw))}, linear "
        f"aligned {pct(mean(aligned))}; lower after alignment for {lower}/{len(raw)} pairs",
        [paired("linear - aligned barrier, paired %", gains, seed=seed)],
        {"linear": mean(raw), "linear_aligned": mean(aligned), "lower_pairs": lower},
    )


def _geodesic_ranking(net: NetResults, seed: int, *, tie_samples: int) -> _Finding:
    tolerance = tie_samples / net.split[0]
    finding = _ranked(
        "geodesic barrier",
        _barriers(net.curves, "geodesic"),
        WITHIN,
        percent=True,
        tolerance=tolerance,
        seed=seed,
    )
    measured = (
        f"{finding.measured}; ties: differences up to {tie_samples} train samples "
        f"({pct(tolerance)})"
    )
    return finding._replace(measured=measured, values={**finding.values, "tie": tolerance})


#: how the bend claim names the midpoints' starting paths
_START = {"geodesic": "geodesic start", "linear_aligned": "aligned start", "linear": "raw start"}


def _bend(net: NetResults, seed: int, *, near_zero: float) -> _Finding:
    found = {
        kind: [b for group in _barriers(net.bends, kind).values() for b in group]
        for kind in ("bend_linear", "bend_linear_aligned", "bend")
    }
    means = {kind: mean(v) for kind, v in found.items()}
    aligned = found["bend"] + found["bend_linear_aligned"]
    above = sum(b >= near_zero for b in aligned)
    restarted = {path: sum(r > 0 for r in runs) for path, runs in net.midpoint_restarts.items()}
    restarts = ", ".join(
        f"{_START[path]} {count}/{len(net.midpoint_restarts[path])}"
        for path, count in restarted.items()
    )
    return _Finding(
        f"mean bend barrier over {len(found['bend'])} pairs: geodesic legs "
        f"{pct(means['bend'])}, aligned linear legs {pct(means['bend_linear_aligned'])} "
        f"(raw linear legs {pct(means['bend_linear'])}); {above}/{len(aligned)} aligned "
        f"bends at or above {pct(near_zero)} (near zero: below {pct(near_zero)})"
        + (
            f"; midpoint trainings that diverged and restarted at half the learning rate: "
            f"{restarts}"
            if restarts
            else ""
        ),
        [
            mean_above(
                f"{pct(near_zero)} - mean aligned bend barrier %", aligned, near_zero, seed=seed
            )
        ],
        {
            **means,
            "max_aligned": max(aligned, default=math.nan),
            "near_zero": near_zero,
            "restarted": restarted,
        },
    )


def _closeness(net: NetResults, seed: int) -> _Finding:
    finding = _ranked(
        "normalized aligned Euclidean distance within a class",
        net.closeness,
        WITHIN,
        percent=False,
        seed=seed,
    )
    baseline = mean(net.untrained)
    measured = (
        f"{finding.measured}; untrained pairs (baseline): {baseline:.3f} ({len(net.untrained)})"
    )
    return finding._replace(measured=measured, values={**finding.values, "untrained": baseline})


def _flatness(net: NetResults, seed: int) -> _Finding:
    sigma = net.energies["sgd"][0].sigmas[-1]
    energies = {a: [e.mean[-1] for e in net.energies.get(a, [])] for a in ALGOS}
    errors = {a: list(net.test_errors.get(a, [])) for a in ALGOS}
    ranking = _ranked(f"local energy at sigma {sigma:g}", energies, ALGOS, percent=True, seed=seed)
    flat_energy = [v for a in ALGOS for v in energies[a]]
    flat_error = [v for a in ALGOS for v in errors[a]]
    rho = correlation("Spearman(local energy, test error)", flat_energy, flat_error, seed=seed + 10)
    return _Finding(
        f"{ranking.measured}; test error: {_ranking(errors)}",
        [*ranking.evidence, rho],
        {
            "sigma": sigma,
            "local_energy": ranking.values,
            "test_error": _means(errors),
            "spearman": rho.estimate,
        },
    )


def _midpoints(net: NetResults, seed: int) -> _Finding:
    across = {cls: d for cls, d in net.midpoint_distances.items() if cls not in WITHIN}
    gaps = [far - near for group in across.values() for near, far in group]
    per_class = "; ".join(
        f"{cls}: to the flatter {mean([n for n, _ in g]):.3f}, to the other "
        f"{mean([f for _, f in g]):.3f} ({len(g)})"
        for cls, g in across.items()
    )
    return _Finding(
        f"normalized aligned Euclidean distance from each optimized geodesic midpoint to "
        f"its endpoints, pairs of different classes: {per_class or 'none'}",
        [paired("distance to the sharper - to the flatter endpoint", gaps, seed=seed)],
        {"gap": mean(gaps), "pairs": len(gaps)},
    )


def _binary(results: Measurements, seed: int) -> Claim:
    sizes = results.binary
    raw = [
        mean([c.barrier for g in s.curves.values() for c in g if c.kind == "random_flip"])
        for s in sizes
    ]
    aligned = [
        mean([c.barrier for g in s.curves.values() for c in g if c.kind == "random_flip_aligned"])
        for s in sizes
    ]
    by_algo = {
        cls: [
            mean([c.barrier for c in s.curves.get(cls, []) if c.kind == "random_flip"])
            for s in sizes
        ]
        for cls in WITHIN
    }
    ratios = [s.ratio for s in sizes]
    points = [
        (s.ratio, c.barrier)
        for s in sizes
        for g in s.curves.values()
        for c in g
        if c.kind == "random_flip"
    ]
    per_class = "; ".join(
        f"{cls} " + " → ".join(pct(v) for v in values) for cls, values in by_algo.items()
    )
    b = results.plan.binary
    rho = correlation(
        "-Spearman(N/D, barrier)",
        [p[0] for p in points],
        [p[1] for p in points],
        sign=-1,
        seed=seed,
    )
    finding = _Finding(
        "mean barrier along random flip paths (all pairs within a class), N/D = "
        + ", ".join(str(r) for r in ratios)
        + ": "
        + " → ".join(pct(v) for v in raw)
        + " (aligned: "
        + " → ".join(pct(v) for v in aligned)
        + f"); per class: {per_class}",
        [rho],
        {
            "ratios": ratios,
            "random_flip": raw,
            "random_flip_aligned": aligned,
            "by_class": by_algo,
            "spearman": -rho.estimate,
        },
    )
    scope = (
        f"binary committee machine, H = {b.hidden}, on the HMM (D = {b.D}, P = {b.P}), "
        f"N/D = {', '.join(str(r) for r in ratios)}"
    )
    return _claim("6", 6, scope, finding)


def evaluate_claims(results: Measurements) -> list[Claim]:
    """Claims (1)-(5) and (7) for every continuous network, then claim (6) for the binary
    networks; every bootstrap is seeded from the run's seed."""
    plan, seed = results.plan, results.seed
    checks: dict[int, Callable[[NetResults, int], _Finding]] = {
        1: _alignment,
        2: functools.partial(_geodesic_ranking, tie_samples=plan.tie_samples),
        3: functools.partial(_bend, near_zero=plan.near_zero),
        4: _closeness,
        5: _flatness,
        7: _midpoints,
    }
    claims = [
        _claim(
            f"{number}-{net.plan.label}", number, net.plan.title, check(net, seed + 100 * number)
        )
        for number, check in checks.items()
        for net in results.nets
    ]
    if results.binary:
        claims.append(_binary(results, seed + 600))
    return claims

"""The paper's qualitative claims, each evaluated on the measurements into a record with
the numbers measured here and whether the claim holds. Thresholds and orders are
fixed in advance (never adjusted to the results)."""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from canon._format import pct
from canon.plots import class_pairs
from canon.repro._plan import ALGOS

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
}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper checked on one setting: what was measured, and whether it holds."""

    id: str
    claim: str
    paper: str
    scope: str
    measured: str
    holds: bool
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def mean(values: Sequence[float]) -> float:
    """The mean, NaN for no values."""
    return statistics.fmean(values) if values else math.nan


def _barriers(curves: Mapping[str, Sequence[PathCurve]], kind: str) -> dict[str, list[float]]:
    return {
        cls: [c.barrier for c in group if c.kind == kind]
        for cls, group in curves.items()
        if any(c.kind == kind for c in group)
    }


def _increasing(values: Sequence[float]) -> bool:
    finite = not any(math.isnan(v) for v in values)
    return finite and all(a < b for a, b in itertools.pairwise(values))


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


class _Finding(NamedTuple):
    """What checking a claim found: the numbers in words, whether it holds, the numbers."""

    measured: str
    holds: bool
    values: dict[str, Any]


def _claim(id: str, number: int, scope: str, finding: _Finding) -> Claim:
    """Claim ``number`` (:data:`_STATEMENTS`) checked on the setting ``scope``."""
    claim, paper = _STATEMENTS[number]
    return Claim(id, claim, paper, scope, *finding)


def _ranked_within(
    what: str, found: Mapping[str, Sequence[float]], percent: bool = True
) -> _Finding:
    """Whether ``what`` (values per pair class), averaged within each class, ranks
    rsgd-rsgd < sgd-sgd < adv-adv."""
    groups = {cls: found.get(cls, []) for cls in WITHIN}
    means = _means(groups)
    measured = f"{what}, mean ± std (pairs): " + _ranking(groups, percent)
    return _Finding(measured, _increasing(list(means.values())), means)


def _alignment(net: NetResults) -> _Finding:
    raw = [b for group in _barriers(net.curves, "linear").values() for b in group]
    aligned = [b for group in _barriers(net.curves, "linear_aligned").values() for b in group]
    lower = sum(a < r for r, a in zip(raw, aligned, strict=True))
    return _Finding(
        f"mean barrier over {len(raw)} pairs: linear {pct(mean(raw))}, linear "
        f"aligned {pct(mean(aligned))}; lower after alignment for {lower}/{len(raw)} pairs",
        mean(aligned) < mean(raw),
        {"linear": mean(raw), "linear_aligned": mean(aligned), "lower_pairs": lower},
    )


def _geodesic_ranking(net: NetResults) -> _Finding:
    return _ranked_within("geodesic barrier", _barriers(net.curves, "geodesic"))


def _bend(net: NetResults, near_zero: float) -> _Finding:
    found = {
        kind: [b for group in _barriers(net.bends, kind).values() for b in group]
        for kind in ("bend_linear", "bend_linear_aligned", "bend")
    }
    means = {kind: mean(v) for kind, v in found.items()}
    aligned = found["bend"] + found["bend_linear_aligned"]
    above = sum(b >= near_zero for b in aligned)
    return _Finding(
        f"mean bend barrier over {len(found['bend'])} pairs: geodesic legs "
        f"{pct(means['bend'])}, aligned linear legs {pct(means['bend_linear_aligned'])} "
        f"(raw linear legs {pct(means['bend_linear'])}); max after alignment "
        f"{pct(max(aligned, default=math.nan))}, {above}/{len(aligned)} at or above "
        f"{pct(near_zero)} (near zero: below {pct(near_zero)})",
        means["bend"] < near_zero and means["bend_linear_aligned"] < near_zero,
        {**means, "max_aligned": max(aligned, default=math.nan), "near_zero": near_zero},
    )


def _closeness(net: NetResults) -> _Finding:
    table = next(t for t in net.distances if t.metric == "geodesic")
    pairs = class_pairs(table, net.classes)
    return _ranked_within("geodesic distance within a class", pairs, percent=False)


def _flatness(net: NetResults) -> _Finding:
    sigma = net.energies["sgd"][0].sigmas[-1]
    energies = {a: [e.mean[-1] for e in net.energies.get(a, [])] for a in ALGOS}
    errors = {a: list(net.test_errors.get(a, [])) for a in ALGOS}
    energy, tests = _means(energies), _means(errors)
    return _Finding(
        f"local energy at sigma {sigma:g}, mean ± std (solutions): "
        f"{_ranking(energies)}; test error: {_ranking(errors)}",
        _increasing(list(energy.values())) and _increasing(list(tests.values())),
        {"sigma": sigma, "local_energy": energy, "test_error": tests},
    )


def _binary(results: Measurements) -> Claim:
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
    per_class = "; ".join(
        f"{cls} " + " → ".join(pct(v) for v in values) for cls, values in by_algo.items()
    )
    b = results.plan.binary
    finding = _Finding(
        "mean barrier along random flip paths (all pairs within a class), N/D = "
        + ", ".join(str(r) for r in ratios)
        + ": "
        + " → ".join(pct(v) for v in raw)
        + " (aligned: "
        + " → ".join(pct(v) for v in aligned)
        + f"); per class: {per_class}",
        _increasing(list(reversed(raw))),
        {
            "ratios": ratios,
            "random_flip": raw,
            "random_flip_aligned": aligned,
            "by_class": by_algo,
        },
    )
    scope = (
        f"binary committee machine, H = {b.hidden}, on the HMM (D = {b.D}, P = {b.P}), "
        f"N/D = {', '.join(str(r) for r in ratios)}"
    )
    return _claim("6", 6, scope, finding)


def evaluate_claims(results: Measurements) -> list[Claim]:
    """Claims (1)-(5) for every continuous network, then claim (6) for the binary networks."""
    bend = functools.partial(_bend, near_zero=results.plan.near_zero)
    checks: tuple[Callable[[NetResults], _Finding], ...]
    checks = (_alignment, _geodesic_ranking, bend, _closeness, _flatness)
    claims = [
        _claim(f"{number}-{net.plan.label}", number, net.plan.title, check(net))
        for number, check in enumerate(checks, start=1)
        for net in results.nets
    ]
    if results.binary:
        claims.append(_binary(results))
    return claims

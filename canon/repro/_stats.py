"""Statistics behind the claim checks: seeded bootstrap confidence intervals, Spearman rank
correlations, and the three verdicts.

Every elementary check is stated as a quantity the claim expects to be *positive*
(for "A ranks below B": mean(B) - mean(A)), with a 95% percentile-bootstrap
interval and a tolerance under which a difference counts as a tie
(:class:`Evidence`). A claim made of several checks holds when every check holds,
does not hold when any check does not, and is inconclusive otherwise
(:func:`combine`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "FAILS",
    "HOLDS",
    "INCONCLUSIVE",
    "VERDICTS",
    "Evidence",
    "combine",
    "correlation",
    "count_verdicts",
    "difference",
    "mean_above",
    "paired",
    "spearman",
]

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive at this scale"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)

#: Bootstrap resamples and the interval's coverage.
RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Evidence:
    """One quantity the claim expects to be positive: its estimate and bootstrap interval.

    The verdict: ``holds`` when the interval lies above 0 and the estimate above
    ``tolerance``; ``does not hold`` when the interval lies below 0 and the
    estimate below ``-tolerance``; otherwise ``inconclusive at this scale`` (too
    few samples, or a difference within the tie tolerance).
    """

    what: str
    estimate: float
    low: float
    high: float
    tolerance: float = 0.0
    samples: int = 0

    @property
    def verdict(self) -> str:
        """``holds``, ``does not hold`` or ``inconclusive at this scale``."""
        if not all(math.isfinite(v) for v in (self.estimate, self.low, self.high)):
            return INCONCLUSIVE
        if self.low > 0 and self.estimate > self.tolerance:
            return HOLDS
        if self.high < 0 and self.estimate < -self.tolerance:
            return FAILS
        return INCONCLUSIVE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the verdict."""
        return {**asdict(self), "verdict": self.verdict}


def combine(evidence: Sequence[Evidence]) -> str:
    """A claim's verdict from its checks: all hold, any fails, or inconclusive."""
    verdicts = [e.verdict for e in evidence]
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if FAILS in verdicts:
        return FAILS
    return INCONCLUSIVE


def count_verdicts(verdicts: Sequence[str]) -> str:
    """How many of ``verdicts`` are each of :data:`VERDICTS`, e.g. ``1 holds, 0 does not
    hold, 2 inconclusive at this scale``."""
    return ", ".join(f"{sum(v == kind for v in verdicts)} {kind}" for kind in VERDICTS)


def _interval(draws: np.ndarray) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    if finite.size < RESAMPLES // 2:
        return math.nan, math.nan
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _bootstrap(
    samples: Sequence[Sequence[float]],
    statistic: Callable[..., Any],
    seed: int,
    *,
    together: bool = False,
) -> tuple[float, float, float]:
    """``statistic`` of the samples, and its percentile-bootstrap interval.

    ``statistic`` works along the last axis (it gets arrays of shape (n,) for
    the estimate and (resamples, n) for the interval). Each sample is
    resampled on its own, or all with the same indices (``together``: paired
    values). The interval is NaN when a sample has fewer than 2 values.
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    estimate = float(statistic(*arrays)) if all(a.size for a in arrays) else math.nan
    if any(a.size < 2 for a in arrays):
        return estimate, math.nan, math.nan
    rng = np.random.default_rng(seed)
    shared = rng.integers(0, arrays[0].size, size=(RESAMPLES, arrays[0].size))
    indices = [
        shared if together else rng.integers(0, a.size, size=(RESAMPLES, a.size)) for a in arrays
    ]
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = np.asarray(statistic(*(a[i] for a, i in zip(arrays, indices, strict=True))))
    return (estimate, *_interval(draws))


def difference(
    what: str,
    lower: Sequence[float],
    higher: Sequence[float],
    *,
    tolerance: float = 0.0,
    seed: int = 0,
) -> Evidence:
    """mean(higher) - mean(lower) for two independent samples (``lower`` should rank below).

    The bootstrap always resamples the two samples in one canonical order (by size, then
    values), so swapping them negates the estimate and the interval exactly: the verdict
    never depends on which class is passed first.
    """
    swap = (len(higher), list(higher)) < (len(lower), list(lower))
    first, second = (higher, lower) if swap else (lower, higher)
    estimate, low, high = _bootstrap([first, second], lambda a, b: b.mean(-1) - a.mean(-1), seed)
    if swap:
        estimate, low, high = -estimate, -high, -low
    return Evidence(what, estimate, low, high, tolerance, min(len(lower), len(higher)))


def paired(what: str, differences: Sequence[float], *, seed: int = 0) -> Evidence:
    """The mean of paired differences that the claim expects to be positive."""
    estimate, low, high = _bootstrap([differences], lambda d: d.mean(-1), seed)
    return Evidence(what, estimate, low, high, 0.0, len(differences))


def mean_above(what: str, values: Sequence[float], bound: float, *, seed: int = 0) -> Evidence:
    """bound - mean(values): positive when the mean lies below ``bound``."""
    estimate, low, high = _bootstrap([values], lambda v: bound - v.mean(-1), seed)
    return Evidence(what, estimate, low, high, 0.0, len(values))


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> Any:
    """Spearman's rank correlation of x and y along the last axis (ties share their mean
    rank; NaN where one of them is constant)."""
    from scipy.stats import rankdata

    rx = rankdata(np.asarray(x, dtype=float), axis=-1)
    ry = rankdata(np.asarray(y, dtype=float), axis=-1)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(-1) / np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    return float(rho) if rho.ndim == 0 else rho


def correlation(
    what: str, x: Sequence[float], y: Sequence[float], *, sign: int = 1, seed: int = 0
) -> Evidence:
    """sign * Spearman(x, y), the pairs (x_i, y_i) resampled together for the interval."""
    estimate, low, high = _bootstrap(
        [x, y], lambda a, b: sign * spearman(a, b), seed, together=True
    )
    return Evidence(what, estimate, low, high, 0.0, len(x))

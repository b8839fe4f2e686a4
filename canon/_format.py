"""How canon writes numbers for people (the CLI, the web view, model cards, reports)."""

from __future__ import annotations

import math

__all__ = ["pct"]


def pct(value: object) -> str:
    """A fraction as a percentage with two decimals, ``-`` when missing or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}%"

"""Figures: error curves along paths between two networks (the paper's Fig. 2)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from canon.engine import PathCurve
from canon.errors import ConfigError

__all__ = ["plot_curves"]

SUFFIXES = (".png", ".svg", ".pdf")


def plot_curves(
    curves: Mapping[str, PathCurve], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Draw train error (%) against position x in [0, 1], one line per path kind.

    The format follows the suffix of ``path`` (``.png``, ``.svg`` or ``.pdf``);
    drawing uses matplotlib's Agg canvas, never a window.
    """
    out = Path(path)
    if out.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"`path` must end in {', '.join(SUFFIXES)}, got `{out.name}`")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for kind, curve in curves.items():
        ax.plot(
            curve.x,
            [100 * e for e in curve.train_error],
            marker="o",
            markersize=3,
            label=f"{kind} (barrier {100 * curve.barrier:.1f}%)",
        )
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("position along the path (0 = first network, 1 = second)")
    ax.set_ylabel("train error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    fig.savefig(out, format=out.suffix.lower().lstrip("."))

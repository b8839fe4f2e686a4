"""Error along paths between networks: one pair (``canon compare --plot``), classes of
pairs with mean and standard-deviation bands (the paper's Figs. 2 and 3), and binary
random-flip paths against the Hamming distance (Figs. 6 and 7)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from canon.errors import ConfigError
from canon.plots._style import (
    SMALL,
    PathLike,
    class_color,
    columns_mean_std,
    kind_label,
    kind_through_midpoint,
    legend,
    new_figure,
    order_classes,
    percent,
    save,
    style_axes,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from canon.engine import PathCurve

__all__ = ["class_curve", "plot_curves", "plot_hamming_paths", "plot_path_classes"]

X_LABEL = "position along the path (0 = first network, 1 = second)"
Y_LABEL = "train error (%)"


def plot_curves(
    curves: Mapping[str, PathCurve],
    path: PathLike | None,
    title: str = "",
    *,
    fmt: str | None = None,
) -> Figure:
    """Train error (%) against position x in [0, 1] for one pair, one line per path kind.

    Used by ``canon compare --plot``. The format follows the suffix of ``path``
    (``.png``, ``.svg`` or ``.pdf``); the figure is returned and, when ``path``
    is given, written there.
    """
    fig, (ax,) = new_figure(width=5.5, height=3.8)
    for kind, curve in curves.items():
        ax.plot(
            curve.x,
            percent(curve.train_error),
            marker="o",
            markersize=3,
            label=f"{kind_label(kind)} (barrier {100 * curve.barrier:.1f}%)",
        )
    ax.set_xlim(0.0, 1.0)
    style_axes(ax, X_LABEL, Y_LABEL, title)
    # below the axes: inside, it covers the barrier's peak whenever the curves fill the plot
    legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return save(fig, path, fmt)


def class_curve(curves: Sequence[PathCurve]) -> tuple[list[float], list[float], list[float]]:
    """(x, mean, std) of the train error over the curves of one class of pairs.

    The std is across pairs; a class of one pair shows that curve's own spread
    (over flip orders for random-flip paths), or none.
    """
    if not curves:
        raise ConfigError("a class of pairs needs at least one curve")
    points = {len(c.train_error) for c in curves}
    if len(points) != 1:
        raise ConfigError(
            f"curves of one class must have the same number of points, got {sorted(points)}"
        )
    first = curves[0]
    own = first.train_error_std or [0.0] * len(first.train_error)
    mean, std = columns_mean_std([c.train_error for c in curves], own)
    return list(first.x), mean, std


def _barrier_text(curves: Sequence[PathCurve]) -> str:
    barriers = [100 * c.barrier for c in curves]
    spread = f" ± {statistics.pstdev(barriers):.2f}" if len(barriers) > 1 else ""
    return f"{statistics.fmean(barriers):.2f}{spread}% ({len(curves)})"


LEGEND_TITLE = "pairs: barrier mean ± std (count)"


def _band(
    ax: Axes, x: Sequence[float], mean: Sequence[float], std: Sequence[float], **style: Any
) -> None:
    """One standard deviation around the mean error, in percent (not below 0), shaded."""
    low = [100 * max(0.0, m - s) for m, s in zip(mean, std, strict=True)]
    high = [100 * (m + s) for m, s in zip(mean, std, strict=True)]
    ax.fill_between(x, low, high, linewidth=0, **style)


def plot_path_classes(
    curves: Mapping[str, Sequence[PathCurve]],
    path: PathLike | None = None,
    *,
    kinds: Sequence[str] | None = None,
    title: str = "",
    fmt: str | None = None,
) -> Figure:
    """Train error along paths, one panel per path kind and one line per class of pairs.

    ``curves`` maps a pair class (``"rsgd-rsgd"``, ``"sgd-adv"``, ...) to the curves
    of its pairs, of any kinds; each curve runs from the first network of its
    pair (the flatter class by convention) to the second. The line is the mean
    error over the pairs and the band one standard deviation (the paper's
    Fig. 2 for linear, linear-aligned and geodesic paths; Fig. 3 for optimized
    single-bend paths, whose midpoint sits at x = 0.5). ``kinds`` orders the
    panels (default: the kinds in order of appearance).
    """
    present = list(dict.fromkeys(c.kind for group in curves.values() for c in group))
    panels = list(kinds) if kinds is not None else present
    missing = [k for k in panels if k not in present]
    if not panels or missing:
        raise ConfigError(
            f"no curves of kind {', '.join(f'`{k}`' for k in missing)} to plot"
            if missing
            else "no curves to plot"
        )
    fig, axes = new_figure(len(panels), width=4.0, height=3.4)
    for ax in axes[1:]:
        ax.sharey(axes[0])
    for ax, kind in zip(axes, panels, strict=True):
        for index, cls in enumerate(order_classes(curves)):
            group = [c for c in curves[cls] if c.kind == kind]
            if not group:
                continue
            x, mean, std = class_curve(group)
            color = class_color(cls, index)
            ax.plot(
                x,
                percent(mean),
                color=color,
                linewidth=1.6,
                label=f"{cls}: {_barrier_text(group)}",
            )
            _band(ax, x, mean, std, color=color, alpha=0.18)
        if kind_through_midpoint(kind):
            ax.axvline(0.5, color="0.4", linestyle=":", linewidth=1, label="optimized midpoint")
        ax.set_xlim(0.0, 1.0)
        style_axes(ax, "position along the path (rescaled to [0, 1])", Y_LABEL, kind_label(kind))
        legend(ax, title=LEGEND_TITLE, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    axes[0].set_ylim(bottom=0.0)  # once every panel is drawn: the shared top fits them all
    return save(fig, path, fmt, title=title)


def _hamming_length(curve: PathCurve) -> float:
    d = curve.distances
    value = d.hamming_aligned_fraction if curve.kind.endswith("aligned") else d.hamming_fraction
    if value is None or not math.isfinite(value):
        raise ConfigError(
            f"a `{curve.kind}` curve has no Hamming distance; Hamming plots need binary networks"
        )
    return float(value)


def plot_hamming_paths(
    curves: Mapping[str, Sequence[PathCurve]],
    path: PathLike | None = None,
    *,
    title: str = "",
    fmt: str | None = None,
) -> Figure:
    """Train error along random shortest (flip) paths between binary networks, against the
    Hamming distance travelled (fraction of weights), one colour per class of pairs.

    Raw paths (``random_flip``) are dashed and light, aligned ones
    (``random_flip_aligned``) solid: the shorter aligned paths show the
    distance removed by symmetry removal (the paper's Figs. 6 and 7). Each line
    is the mean over the class's pairs (and flip orders), its band one std.
    """
    fig, (ax,) = new_figure(width=5.6, height=3.9)
    drawn = 0
    for index, cls in enumerate(order_classes(curves)):
        color = class_color(cls, index)
        for kind, style, alpha in (("random_flip", "--", 0.55), ("random_flip_aligned", "-", 1.0)):
            group = [c for c in curves[cls] if c.kind == kind]
            if not group:
                continue
            x, mean, std = class_curve(group)
            length = statistics.fmean(_hamming_length(c) for c in group)
            xs = [length * v for v in x]
            tag = "aligned" if kind.endswith("aligned") else "raw"
            ax.plot(
                xs,
                percent(mean),
                linestyle=style,
                color=color,
                alpha=alpha,
                linewidth=1.5,
                label=f"{cls}, {tag}: {_barrier_text(group)}",
            )
            _band(ax, xs, mean, std, color=color, alpha=0.12 * alpha)
            drawn += 1
    if not drawn:
        raise ConfigError("no `random_flip` or `random_flip_aligned` curves to plot")
    ax.set_xlim(left=0.0)
    ax.set_ylim(bottom=0.0)
    style_axes(ax, "Hamming distance from the first network (fraction of weights)", Y_LABEL, title)
    legend(ax, title=LEGEND_TITLE, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.xaxis.get_label().set_fontsize(SMALL + 1)
    return save(fig, path, fmt)

"""Pairwise results of a zoo: distances between classes of solutions (the paper's Fig. 5)
and any pairwise table (barriers or distances) as a matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from canon.errors import ConfigError
from canon.plots._style import (
    SMALL,
    PathLike,
    class_color,
    mean_std,
    new_figure,
    order_classes,
    pair_class,
    save,
    style_axes,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from canon.zoo import Table

__all__ = [
    "METRIC_LABELS",
    "class_pairs",
    "plot_distances",
    "plot_midpoint_distances",
    "plot_table",
]

METRIC_LABELS = {
    "euclidean": "Euclidean distance\n(raw parameters)",
    "euclidean_aligned": "Euclidean distance\n(aligned)",
    "geodesic": "geodesic distance\n(normalized, aligned)",
    "hamming": "Hamming distance (weights)",
    "hamming_fraction": "Hamming distance (fraction of weights)",
    "hamming_aligned": "Hamming distance, aligned (weights)",
    "hamming_aligned_fraction": "Hamming distance, aligned (fraction)",
    "barrier": "barrier: max train error on the path (%)",
    "excess": "excess barrier over the endpoints' line (%)",
}
_PERCENT = ("barrier", "excess")


def class_pairs(table: Table, classes: Mapping[str, str]) -> dict[str, list[float]]:
    """The table's off-diagonal values grouped by pair class (``"sgd-adv"``, ...).

    ``classes`` maps each entry name of the table to its class (for example its
    ``algo`` tag); every name must have one.
    """
    missing = [n for n in table.names if n not in classes]
    if missing:
        raise ConfigError(f"no class for entr{'y' if len(missing) == 1 else 'ies'} {missing}")
    groups: dict[str, list[float]] = {}
    n = len(table.names)
    for i in range(n):
        for j in range(i + 1, n):
            cls = pair_class(classes[table.names[i]], classes[table.names[j]])
            groups.setdefault(cls, []).append(float(table.matrix[i, j]))
    return groups


def plot_distances(
    tables: Table | Sequence[Table],
    classes: Mapping[str, str],
    path: PathLike | None = None,
    *,
    title: str = "",
    fmt: str | None = None,
) -> Figure:
    """Distances between solutions grouped by class of pair, one panel per table (metric).

    For each pair class (``rsgd-rsgd``, ``sgd-sgd``, ..., ``sgd-adv``) the mean
    and standard deviation over its pairs, with every pair as a faint dot (the
    paper's Fig. 5, left). Give tables of raw distances (``euclidean``) and of
    normalized, aligned ones (``geodesic``) side by side to see what symmetry
    removal changes.
    """
    chosen = [tables] if not isinstance(tables, Sequence) else list(tables)
    if not chosen:
        raise ConfigError("no distance tables to plot")
    fig, axes = new_figure(len(chosen), width=4.4, height=3.5)
    for ax, table in zip(axes, chosen, strict=True):
        groups = class_pairs(table, classes)
        if not groups:
            raise ConfigError("a distance plot needs at least two entries")
        order = order_classes(groups)
        scale = 100.0 if table.metric in _PERCENT else 1.0
        for x, cls in enumerate(order):
            values = [scale * v for v in groups[cls]]
            color = class_color(cls, x)
            ax.scatter([x] * len(values), values, color=color, alpha=0.35, s=12, linewidths=0)
            mean, spread = mean_std(values)
            ax.errorbar(
                x,
                mean,
                yerr=spread,
                fmt="o",
                color=color,
                markersize=6,
                capsize=4,
            )
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right")
        ax.set_xlim(-0.6, len(order) - 0.4)
        style_axes(
            ax, "pair of solutions (class-class)", METRIC_LABELS.get(table.metric, table.metric)
        )
    return save(fig, path, fmt, title=title)


def plot_midpoint_distances(
    distances: Mapping[str, Sequence[tuple[float, float]]],
    path: PathLike | None = None,
    *,
    title: str = "",
    fmt: str | None = None,
) -> Figure:
    """Distances from optimized midpoints to their endpoints (the paper's Fig. 5, middle and
    right).

    ``distances`` maps a pair class (``"rsgd-adv"``: flatter class first) to one
    (distance to the first endpoint, distance to the second) per optimized
    midpoint. The left panel shows the distances to the first (flatter)
    endpoint, the right panel to the second, each class as mean and standard
    deviation with every midpoint as a faint dot.
    """
    order = order_classes([cls for cls, group in distances.items() if group])
    if not order:
        raise ConfigError("no midpoint distances to plot")
    fig, axes = new_figure(2, width=4.4, height=3.5)
    sides = ("to the left (flatter) endpoint", "to the right endpoint")
    for side, (ax, label) in enumerate(zip(axes, sides, strict=True)):
        for x, cls in enumerate(order):
            values = [pair[side] for pair in distances[cls]]
            color = class_color(cls, x)
            ax.scatter([x] * len(values), values, color=color, alpha=0.35, s=12, linewidths=0)
            mean, spread = mean_std(values)
            ax.errorbar(x, mean, yerr=spread, fmt="o", color=color, markersize=6, capsize=4)
        ax.set_xticks(range(len(order)), order, rotation=35, ha="right")
        ax.set_xlim(-0.6, len(order) - 0.4)
        style_axes(ax, "pair of endpoints (left-right)", f"midpoint's distance\n{label}")
    return save(fig, path, fmt, title=title)


def plot_table(
    table: Table, path: PathLike | None = None, *, title: str = "", fmt: str | None = None
) -> Figure:
    """A pairwise table (``Zoo.barrier_table``) as a colour matrix with its values printed.

    Barriers and excesses are shown in percent of train error; distances in
    their own units. The path kind (for barriers) goes in the default title.
    """
    import numpy as np

    n = len(table.names)
    if n < 2:
        raise ConfigError("a table plot needs at least two entries")
    scale = 100.0 if table.metric in _PERCENT else 1.0
    values = scale * np.asarray(table.matrix, dtype=float)
    side = min(9.0, 2.2 + 0.42 * n)
    fig, (ax,) = new_figure(width=side + 1.2, height=side)
    image = ax.imshow(values, cmap="magma_r", vmin=0.0)
    if n <= 16:
        top = float(values.max()) or 1.0
        for i in range(n):
            for j in range(n):
                if i != j:
                    ax.text(
                        j,
                        i,
                        f"{values[i, j]:.2g}",
                        ha="center",
                        va="center",
                        fontsize=max(5.0, SMALL - 0.2 * n),
                        color="white" if values[i, j] > 0.6 * top else "black",
                    )
    ax.set_xticks(range(n), table.names, rotation=60, ha="right", fontsize=SMALL)
    ax.set_yticks(range(n), table.names, fontsize=SMALL)
    label = METRIC_LABELS.get(table.metric, table.metric)
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label(label, fontsize=SMALL + 1)
    bar.ax.tick_params(labelsize=SMALL)
    default = f"{table.metric} along {table.path} paths" if table.path else table.metric
    ax.set_title(title or default, fontsize=SMALL + 2)
    return save(fig, path, fmt)

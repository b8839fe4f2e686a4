"""The landscape around and between solutions: local energy curves (the paper's Fig. 1)
and the train error on the plane through three networks, raw beside normalized (Fig. 4)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from canon.errors import ConfigError
from canon.plots._style import (
    SMALL,
    PathLike,
    class_color,
    class_marker,
    columns_mean_std,
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

    from canon.engine import LocalEnergy, PlaneResult

__all__ = ["plot_local_energy", "plot_plane"]


def _noise_label(energies: Sequence[LocalEnergy]) -> str:
    if any(e.options.get("binary") for e in energies):
        return r"fraction of weights flipped $\epsilon$"
    return r"noise amplitude $\sigma$ (multiplicative: $w + \sigma z \odot w$)"


def plot_local_energy(
    energies: Mapping[str, Sequence[LocalEnergy]],
    path: PathLike | None = None,
    *,
    test_errors: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    fmt: str | None = None,
) -> Figure:
    """Local energy dE(w, sigma) against the noise, one line per class of solutions, and
    (with ``test_errors``) dE at the largest noise against each solution's test error.

    ``energies`` maps a class (``rsgd``, ``sgd``, ``adv``, ...) to the
    :class:`~canon.engine.LocalEnergy` of its solutions, all on the same noise
    levels; the line is the mean over solutions and the band one standard
    deviation across them (over noise draws for a single solution). This is
    the paper's Fig. 1 (columns 1-2); for binary networks the noise is the
    fraction of weights flipped. ``test_errors`` gives, per class, the test
    errors of the same solutions in the same order.
    """
    classes = order_classes(energies)
    if not classes or not any(energies[c] for c in classes):
        raise ConfigError("no local energies to plot")
    everything = [e for c in classes for e in energies[c]]
    sigmas = everything[0].sigmas
    if any(e.sigmas != sigmas for e in everything):
        raise ConfigError("every local energy in one figure must use the same noise levels")
    fig, axes = new_figure(2 if test_errors is not None else 1, width=4.4, height=3.5)
    ax = axes[0]
    for index, cls in enumerate(classes):
        group = energies[cls]
        if not group:
            continue
        mean, std = map(percent, columns_mean_std([e.mean for e in group], group[0].std))
        color = class_color(cls, index)
        ax.plot(
            sigmas,
            mean,
            color=color,
            marker=class_marker(cls),
            markersize=4,
            label=f"{cls} (n={len(group)})",
        )
        ax.fill_between(
            sigmas,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            color=color,
            alpha=0.18,
            linewidth=0,
        )
    style_axes(
        ax, _noise_label(everything), r"local energy $\delta E$ (increase of train error, %)"
    )
    legend(ax, loc="upper left")
    if test_errors is not None:
        _energy_vs_test(axes[1], energies, test_errors, classes)
    return save(fig, path, fmt, title=title)


def _energy_vs_test(
    ax: Axes,
    energies: Mapping[str, Sequence[LocalEnergy]],
    test_errors: Mapping[str, Sequence[float]],
    classes: list[str],
) -> None:
    for index, cls in enumerate(classes):
        group, tests = energies[cls], test_errors.get(cls, ())
        if len(tests) != len(group):
            raise ConfigError(
                f"class `{cls}` has {len(group)} local energies but {len(tests)} test errors"
            )
        if not group:
            continue
        ax.scatter(
            [100 * t for t in tests],
            [100 * e.mean[-1] for e in group],
            color=class_color(cls, index),
            marker=class_marker(cls),
            s=28,
            label=cls,
        )
    sigma = next(e for c in classes for e in energies[c]).sigmas[-1]
    style_axes(ax, "test error (%)", rf"$\delta E$ at noise {sigma:g} (%)")
    legend(ax, loc="upper left")


def plot_plane(
    raw: PlaneResult,
    normalized: PlaneResult | None = None,
    path: PathLike | None = None,
    *,
    labels: Sequence[str] = ("a", "b", "c"),
    title: str = "",
    fmt: str | None = None,
) -> Figure:
    """Train error on the plane through three networks, the raw section beside the
    normalized one (the paper's Fig. 4), on one colour scale.

    The plane is spanned by networks a, b, c (Gram-Schmidt; axes in parameter
    distance units, a at the origin, b on the first axis); markers and
    ``labels`` show the three networks and dashed lines the straight segments
    between them (linear paths in the raw panel; in the normalized panel, the
    chords of the geodesics). The paper's choice: a = RSGD solution, b = ADV
    solution, c = the same ADV solution aligned to a.
    """
    import numpy as np
    from matplotlib.colors import LogNorm

    if len(labels) != 3:
        raise ConfigError(f"`labels` must name the three networks, got {len(labels)}")
    panels = [raw] if normalized is None else [raw, normalized]
    grids = [100 * np.asarray(p.errors, dtype=float) for p in panels]
    floor = 0.1  # % : errors below it share the darkest colour (log scale)
    top = max(100.0, float(max(g.max() for g in grids)))
    norm = LogNorm(vmin=floor, vmax=top)
    levels = np.geomspace(floor, top, 15)
    fig, axes = new_figure(len(panels), width=4.3, height=3.7)
    image = None
    for ax, panel, grid in zip(axes, panels, grids, strict=True):
        alphas, betas = np.asarray(panel.alphas), np.asarray(panel.betas)
        image = ax.contourf(
            alphas, betas, np.clip(grid, floor, None).T, levels=levels, norm=norm, cmap="viridis"
        )
        anchors = np.asarray(panel.anchors)
        closed = np.vstack([anchors, anchors[:1]])
        ax.plot(closed[:, 0], closed[:, 1], "--", color="white", linewidth=1.0)
        middle = (alphas[0] + alphas[-1]) / 2
        for (x, y), label in zip(anchors, labels, strict=True):
            ax.plot(x, y, "o", color="white", markeredgecolor="black", markersize=6)
            right = x > middle  # labels of points on the right side extend to the left
            ax.annotate(
                label,
                (x, y),
                textcoords="offset points",
                xytext=(-5 if right else 5, 6),
                ha="right" if right else "left",
                color="white",
                fontsize=SMALL,
            )
        kind = "normalized networks" if panel.normalized else "raw parameters"
        style_axes(
            ax, "direction a → b (parameter distance)", "orthogonal direction", kind, grid=False
        )
        ax.set_aspect("equal", adjustable="box")
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.9)
        ticks = [t for t in (0.1, 1.0, 10.0, 100.0) if t <= top]
        bar.set_ticks(ticks, labels=[f"≤{floor:g}"] + [f"{t:g}" for t in ticks[1:]])
        bar.minorticks_off()
        bar.set_label("train error (%)", fontsize=SMALL + 1)
        bar.ax.tick_params(labelsize=SMALL)
    return save(fig, path, fmt, title=title)

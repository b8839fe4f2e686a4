"""Binary networks as they grow: flatness, test error, Hamming distances and barriers
against the size of the network (the paper's Fig. 6, committee machine on the HMM)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from canon.errors import ConfigError
from canon.plots._style import (
    PathLike,
    class_color,
    class_marker,
    legend,
    mean_std,
    new_figure,
    order_classes,
    save,
    style_axes,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from canon.engine import LocalEnergy, PathCurve

__all__ = ["ScalingPoint", "plot_binary_scaling"]


@dataclass(frozen=True)
class ScalingPoint:
    """Results for one network size: per class of solutions their local energies and test
    errors, and per class of pairs their ``random_flip`` / ``random_flip_aligned`` curves."""

    size: float
    energies: Mapping[str, Sequence[LocalEnergy]]
    test_errors: Mapping[str, Sequence[float]]
    curves: Mapping[str, Sequence[PathCurve]]


def _series(
    ax: Axes,
    points: Sequence[ScalingPoint],
    label: str,
    values: Callable[[ScalingPoint], Sequence[float]],
    cls: str,
    index: int,
    **style: object,
) -> None:
    xs, means, stds = [], [], []
    for p in points:
        found = values(p)
        if found:
            mean, std = mean_std([100 * v for v in found])
            xs.append(p.size)
            means.append(mean)
            stds.append(std)
    if xs:
        ax.errorbar(
            xs,
            means,
            yerr=stds,
            color=class_color(cls, index),
            marker=class_marker(cls.partition("-")[0]),
            markersize=5,
            capsize=3,
            label=label,
            **style,  # type: ignore[arg-type]
        )


def _energies(p: ScalingPoint, cls: str) -> list[float]:
    return [e.mean[-1] for e in p.energies.get(cls, ())]


def _tests(p: ScalingPoint, cls: str) -> list[float]:
    return list(p.test_errors.get(cls, ()))


def _curves(p: ScalingPoint, cls: str, kind: str) -> list[PathCurve]:
    return [c for c in p.curves.get(cls, ()) if c.kind == kind]


def _barriers(p: ScalingPoint, cls: str, kind: str) -> list[float]:
    return [c.barrier for c in _curves(p, cls, kind)]


def _hamming(p: ScalingPoint, cls: str, kind: str) -> list[float]:
    aligned = kind.endswith("aligned")
    values = [
        c.distances.hamming_aligned_fraction if aligned else c.distances.hamming_fraction
        for c in _curves(p, cls, kind)
    ]
    return [float(v) for v in values if v is not None]


def plot_binary_scaling(
    points: Sequence[ScalingPoint],
    path: PathLike | None = None,
    *,
    size_label: str = "N / D",
    title: str = "",
    fmt: str | None = None,
) -> Figure:
    """Four panels against network size: local energy at the largest flip fraction and test
    error per class of solutions; Hamming distance and barrier (max train error along
    random shortest paths) per class of pairs, raw (dashed) and aligned (solid).

    Means over solutions (pairs) with one standard deviation as error bars. The
    paper's Fig. 6: as the committee machine grows, solutions get flatter and the
    barriers between them go to zero.
    """
    if not points:
        raise ConfigError("no sizes to plot")
    ordered = sorted(points, key=lambda p: p.size)
    solution_classes = order_classes(c for p in ordered for c in p.energies)
    pair_classes = order_classes(c for p in ordered for c in p.curves)
    fig, axes = new_figure(4, width=3.6, height=3.2)
    sigmas = {e.sigmas[-1] for p in ordered for g in p.energies.values() for e in g}
    eps = ", ".join(f"{s:g}" for s in sorted(sigmas))
    for index, cls in enumerate(solution_classes):
        _series(axes[0], ordered, cls, partial(_energies, cls=cls), cls, index)
        _series(axes[1], ordered, cls, partial(_tests, cls=cls), cls, index)
    for index, cls in enumerate(pair_classes):
        for kind, tag, style in (
            ("random_flip", "raw", {"linestyle": "--", "alpha": 0.55}),
            ("random_flip_aligned", "aligned", {"linestyle": "-"}),
        ):
            label = f"{cls}, {tag}"
            hamming = partial(_hamming, cls=cls, kind=kind)
            barriers = partial(_barriers, cls=cls, kind=kind)
            _series(axes[2], ordered, label, hamming, cls, index, **style)
            _series(axes[3], ordered, label, barriers, cls, index, **style)
    style_axes(
        axes[0], size_label, rf"local energy $\delta E$ at $\epsilon$ = {eps} (%)", "flatness"
    )
    style_axes(axes[1], size_label, "test error (%)", "generalization")
    style_axes(axes[2], size_label, "Hamming distance (% of weights)", "distance between solutions")
    style_axes(axes[3], size_label, "barrier: max train error (%)", "random shortest paths")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks([p.size for p in ordered], [f"{p.size:g}" for p in ordered])
        ax.minorticks_off()
        legend(ax)
    axes[3].set_ylim(bottom=0.0)
    return save(fig, path, fmt, title=title)

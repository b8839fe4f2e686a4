"""Shared styling and output for every figure: colours per solution class, labels, saving.

Figures are drawn on matplotlib's Agg canvas (never a window, no pyplot state),
styled through explicit arguments rather than the global ``rcParams`` so that
drawing from several threads cannot leak settings between figures.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canon.engine import PathKindInfo, get_path_kind
from canon.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FORMATS",
    "PathLike",
    "class_color",
    "class_marker",
    "columns_mean_std",
    "kind_label",
    "kind_through_midpoint",
    "legend",
    "mean_std",
    "new_figure",
    "order_classes",
    "output_path",
    "pair_class",
    "percent",
    "save",
    "style_axes",
    "suptitle",
]

FORMATS = ("png", "svg", "pdf")
#: Where a figure goes: a file name or path.
PathLike = str | os.PathLike[str]
#: PNG resolution: small files that stay readable in print at the figure sizes used here.
DPI = 100
FONT = 10
SMALL = 8.5

#: Solution classes from flattest to sharpest (the paper's RSGD, SGD, ADV order).
FLATNESS_ORDER = ("rsgd", "sgd", "adv")
_CLASS_COLORS = {
    # the paper's colours: green RSGD, blue SGD, red ADV; mixed pairs in between
    "rsgd": "#2ca02c",
    "sgd": "#1f77b4",
    "adv": "#d62728",
    "rsgd-sgd": "#17becf",
    "rsgd-adv": "#ff7f0e",
    "sgd-adv": "#9467bd",
}
_CLASS_MARKERS = {"rsgd": "^", "sgd": "o", "adv": "s"}
_CYCLE = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#393b79", "#637939", "#843c39")


def _path_kind(kind: str) -> PathKindInfo | None:
    """The registered path kind ``kind``; None for a curve of a kind not registered here."""
    try:
        return get_path_kind(kind)
    except ConfigError:
        return None


def kind_label(kind: str) -> str:
    """A readable name for a path kind (its registered label)."""
    info = _path_kind(kind)
    return kind if info is None else info.label


def kind_through_midpoint(kind: str) -> bool:
    """Whether paths of ``kind`` run through a midpoint (at x = 0.5 on single-bend paths)."""
    info = _path_kind(kind)
    return info is not None and info.needs_midpoint


def _rank(label: str) -> tuple[int, str]:
    return (FLATNESS_ORDER.index(label), "") if label in FLATNESS_ORDER else (99, label)


def pair_class(first: str, second: str) -> str:
    """The class of a pair of solutions, flatter class first: ``pair_class("adv", "sgd")``
    is ``"sgd-adv"``; a pair within one class is ``"sgd-sgd"``."""
    a, b = sorted((first, second), key=_rank)
    return f"{a}-{b}"


def order_classes(labels: Iterable[str]) -> list[str]:
    """Distinct labels in display order: within-class pairs (flattest first), then mixed
    pairs; labels of unknown classes sorted by name after those."""

    def key(label: str) -> tuple[int, tuple[int, str], tuple[int, str]]:
        a, sep, b = label.partition("-")
        if not sep:
            return (0, _rank(label), (0, ""))
        return (0 if a == b else 1, _rank(a), _rank(b))

    return sorted(dict.fromkeys(labels), key=key)


def class_color(label: str, index: int = 0) -> str:
    """The colour of a class or pair class (``rsgd``, ``sgd-sgd``, ``rsgd-adv``, ...)."""
    a, sep, b = label.partition("-")
    if sep and a == b:
        label = a
    return _CLASS_COLORS.get(label, _CYCLE[index % len(_CYCLE)])


def class_marker(label: str) -> str:
    """The marker of a class: triangles for rsgd, circles for sgd, squares for adv."""
    return _CLASS_MARKERS.get(label, "D")


def new_figure(panels: int = 1, *, width: float = 3.9, height: float = 3.3, rows: int = 1) -> Any:
    """A figure with ``panels`` axes (``rows`` rows) on an Agg canvas; returns (figure, axes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = -(-panels // rows)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for extra in axes[panels:]:
        extra.set_visible(False)
    return fig, axes[:panels]


def style_axes(ax: Axes, xlabel: str, ylabel: str, title: str = "", *, grid: bool = True) -> None:
    """Label an axes with the shared font sizes (and a light grid)."""
    ax.set_xlabel(xlabel, fontsize=FONT)
    ax.set_ylabel(ylabel, fontsize=FONT)
    if title:
        ax.set_title(title, fontsize=FONT)
    ax.tick_params(labelsize=SMALL)
    if grid:
        ax.grid(alpha=0.3, linewidth=0.6)


def legend(ax: Axes, **kwargs: Any) -> None:
    """A legend in the shared font size (nothing when the axes has no labelled artists)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        box = ax.legend(handles, labels, fontsize=SMALL, framealpha=0.85, **kwargs)
        box.get_title().set_fontsize(SMALL)


def suptitle(fig: Figure, title: str) -> None:
    """A title over all panels (none when empty)."""
    if title:
        fig.suptitle(title, fontsize=FONT + 1)


def output_path(path: PathLike, fmt: str | None = None) -> tuple[Path, str]:
    """Where to write and in which format: the suffix of ``path`` picks the format
    (``.png``, ``.svg``, ``.pdf``); ``fmt`` is used when the path has no suffix and must
    agree with it when it has one."""
    out = Path(path)
    suffix = out.suffix.lower().lstrip(".")
    if fmt is not None and fmt.lower() not in FORMATS:
        raise ConfigError(f"`format` must be one of {', '.join(FORMATS)}, got `{fmt}`")
    if not suffix:
        chosen = (fmt or "png").lower()
        return out.with_name(f"{out.name}.{chosen}"), chosen
    if suffix not in FORMATS:
        raise ConfigError(
            f"the figure file must end in {', '.join('.' + f for f in FORMATS)}, got `{out.name}`"
        )
    if fmt is not None and fmt.lower() != suffix:
        raise ConfigError(f"the file `{out.name}` does not match `format` {fmt}")
    return out, suffix


def save(fig: Figure, path: PathLike | None, fmt: str | None = None, *, title: str = "") -> Figure:
    """Put ``title`` over all panels (:func:`suptitle`), write ``fig`` to ``path`` (format
    from the suffix; PNG at 100 dpi) and return it."""
    suptitle(fig, title)
    if path is None:
        return fig
    out, chosen = output_path(path, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    if chosen == "png":
        _save_png(fig, out)
    else:
        fig.savefig(out, format=chosen, dpi=DPI, bbox_inches="tight", pad_inches=0.08)
    return fig


def _save_png(fig: Figure, out: Path) -> None:
    """PNG with an adaptive 256-colour palette: a third of the size, no visible change."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(
        buffer, format="png", dpi=DPI, facecolor="white", bbox_inches="tight", pad_inches=0.08
    )
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256).save(out, format="PNG", optimize=True)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the (population) standard deviation of ``values``; 0 for one value."""
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def columns_mean_std(
    rows: Sequence[Sequence[float]], single_std: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Per position across ``rows`` (all of one length): the mean, and the standard deviation
    across the rows; with a single row, ``single_std`` (that row's own spread) instead."""
    columns = list(zip(*rows, strict=True))
    mean = [statistics.fmean(col) for col in columns]
    std = [statistics.pstdev(col) for col in columns] if len(rows) > 1 else list(single_std)
    return mean, std


def percent(values: Sequence[float]) -> list[float]:
    """Fractions as percentages."""
    return [100.0 * v for v in values]

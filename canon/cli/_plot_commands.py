"""``canon plot KIND``: the paper's figures from a zoo.

Every plot subcommand selects entries (NAMES, or ``--tag K=V``, default every
solution), groups them into classes by a tag (``--by algo``), reads or computes
what it draws through the zoo (pair results come from its cache when present),
and writes one figure: ``--out FILE`` (its suffix picks the format) or
``KIND.png`` (``--format png|svg|pdf``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from canon.cli._app import App, command, emit
from canon.cli._common import (
    barrier_table,
    open_zoo,
    plane_options,
    points_option,
    progress,
    selection_options,
    table_options,
)
from canon.engine import DEFAULT_PATHS, bend_kind, list_path_kinds

if TYPE_CHECKING:
    from canon.cli._common import Selection
    from canon.engine import PathCurve
    from canon.zoo import Entry, Zoo

    #: Curves per class of pairs, measured on a zoo's pairs (``device``, ``progress``).
    Measure = Callable[..., dict[str, list[PathCurve]]]

__all__ = ["plot"]

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("png", "svg", "pdf")


class _PlotGroup(click.Group):
    """A group whose unknown subcommand is a one-line error (exit code 1)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            kinds = ", ".join(sorted(self.list_commands(ctx)))
            raise click.ClickException(f"unknown plot kind `{name}`; choose one of {kinds}")
        return super().resolve_command(ctx, args)


@click.group(cls=_PlotGroup)
def plot() -> None:
    """Draw the paper's figures from a zoo: paths, bend, energy, plane, distances, table,
    hamming."""


@dataclass(frozen=True)
class _Figure:
    """The figure a plot command writes: its kind (the command's name), ``--out``,
    ``--format`` and ``--title``."""

    kind: str
    out: str | None
    fmt: str | None
    title: str

    def target(self) -> Path:
        """The figure file, checked before any work is done (a bad suffix or format fails)."""
        from canon.plots import output_path

        path, _ = output_path(self.out if self.out is not None else self.kind, self.fmt)
        return path

    def written(self, app: App, path: Path, data: Mapping[str, Any]) -> None:
        """Report the figure written to ``path`` and the data drawn in it."""
        emit(app, {"kind": self.kind, "out": str(path), "data": data}, lambda: f"wrote {path}")


def _figure_options(func: F) -> F:
    """--out, --format and --title, shared by every plot kind, given to the command as one
    :class:`_Figure` named ``figure``."""

    @functools.wraps(func)
    def run(*args: Any, out: str | None, fmt: str | None, title: str, **kwargs: Any) -> Any:
        kind = str(click.get_current_context().info_name)
        return func(*args, figure=_Figure(kind, out, fmt, title), **kwargs)

    run = click.option("--title", default="", help="Title over the figure.")(run)
    run = click.option(
        "--format", "fmt", default=None, metavar="png|svg|pdf", help="Format (default: png)."
    )(run)
    return cast(
        F,
        click.option(
            "--out",
            default=None,
            help="Figure file; its suffix picks the format (default KIND.png).",
        )(run),
    )


def _solutions(zoo: Zoo, selection: Selection, least: int) -> list[Entry]:
    return selection.choose(zoo, least=least, what="this plot")


def _pair_curves(
    app: App, selection: Selection, measure: Measure, **pairing: Any
) -> dict[str, list[PathCurve]]:
    """Curves per class of pairs of the selected solutions (``pairing``: options of
    :func:`canon.repro.entry_pairs_by_class`), measured with a bar over the pairs."""
    from canon.repro import class_of, entry_pairs_by_class

    with open_zoo(app) as zoo:
        entries = _solutions(zoo, selection, 2)
        pairs = entry_pairs_by_class(entries, class_of(entries, selection.by), **pairing)
        with progress(app, "pairs") as bar:
            return measure(zoo, pairs, device=app.device, progress=bar)


def _curve_data(curves: dict[str, list[Any]]) -> dict[str, Any]:
    return {cls: [c.to_dict() for c in group] for cls, group in curves.items()}


@command(group=plot)
@selection_options
@click.option(
    "--kinds",
    default=",".join(DEFAULT_PATHS),
    show_default=True,
    help="Path kinds, comma-separated (one panel each).",
)
@points_option
@click.option("--max-pairs", type=int, default=None, help="At most this many pairs per class.")
@_figure_options
def paths(
    app: App, selection: Selection, kinds: str, points: int, max_pairs: int | None, figure: _Figure
) -> None:
    """Error along paths per class of pairs, mean and std (the paper's Fig. 2)."""
    from canon.errors import ConfigError
    from canon.plots import plot_path_classes
    from canon.repro import path_curves

    comparable = list_path_kinds(comparable=True)
    chosen = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in chosen if k not in comparable]
    if not chosen or bad:
        raise ConfigError(
            f"unknown path kind(s) {', '.join(f'`{k}`' for k in bad) or '(none given)'}; "
            f"choose from {', '.join(comparable)}"
        )
    target = figure.target()
    measure = functools.partial(path_curves, kinds=chosen, points=points)
    curves = _pair_curves(app, selection, measure, per_class=max_pairs)
    plot_path_classes(curves, target, kinds=chosen, title=figure.title)
    figure.written(app, target, _curve_data(curves))


@command(group=plot)
@selection_options
@points_option
@_figure_options
def bend(app: App, selection: Selection, points: int, figure: _Figure) -> None:
    """Error along the single-bend paths through the zoo's midpoints (the paper's Fig. 3)."""
    from canon.errors import ConfigError
    from canon.plots import plot_path_classes
    from canon.repro import bend_curves

    target = figure.target()
    curves = _pair_curves(app, selection, functools.partial(bend_curves, points=points))
    if not curves:
        raise ConfigError(
            "no midpoint entries between the selected pairs; make them with `canon midpoint`"
        )
    order = [bend_kind(p) for p in DEFAULT_PATHS]
    present = {c.kind for group in curves.values() for c in group}
    plot_path_classes(curves, target, kinds=[k for k in order if k in present], title=figure.title)
    figure.written(app, target, _curve_data(curves))


@command(group=plot)
@selection_options
@click.option("--sigma", "sigmas", multiple=True, type=float, help="Noise level (repeatable).")
@click.option("--draws", default=10, show_default=True, help="Noise draws per level.")
@_figure_options
def energy(
    app: App, selection: Selection, sigmas: tuple[float, ...], draws: int, figure: _Figure
) -> None:
    """Local energy per class against noise and against test error (the paper's Fig. 1)."""
    from canon.plots import plot_local_energy
    from canon.repro import class_of, energies_by_class

    target = figure.target()
    with open_zoo(app) as zoo:
        entries = _solutions(zoo, selection, 1)
        classes = class_of(entries, selection.by)
        with progress(app, "entries") as bar:
            energies, tests = energies_by_class(
                zoo,
                entries,
                classes,
                sigmas=sigmas or (0.1, 0.2, 0.3, 0.4, 0.5),
                draws=draws,
                device=app.device,
                progress=bar,
            )
    plot_local_energy(energies, target, test_errors=tests, title=figure.title)
    data = {
        cls: [{"test_error": t, **e.to_dict()} for e, t in zip(group, tests[cls], strict=True)]
        for cls, group in energies.items()
    }
    figure.written(app, target, data)


@command(name="plane", group=plot)
@click.argument("a")
@click.argument("b")
@click.argument("c", required=False)
@plane_options
@_figure_options
def plane_figure(
    app: App, a: str, b: str, c: str | None, grid: int, margin: float, figure: _Figure
) -> None:
    """The plane through A, B and C (default: B aligned to A), raw beside normalized (Fig. 4)."""
    from canon.plots import plot_plane
    from canon.repro import plane_sections

    target = figure.target()
    with open_zoo(app) as zoo:
        ea, eb = zoo.get(a), zoo.get(b)
        ec = zoo.get(c) if c is not None else None
        raw, normalized = plane_sections(
            zoo, ea, eb, ec, grid=grid, margin=margin, device=app.device
        )
    labels = (a, b, c if c is not None else f"{b} aligned")
    plot_plane(raw, normalized, target, labels=labels, title=figure.title)
    figure.written(app, target, {"raw": raw.to_dict(), "normalized": normalized.to_dict()})


@command(group=plot)
@selection_options
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Distance (repeatable, one panel each); default euclidean and geodesic.",
)
@_figure_options
def distances(app: App, selection: Selection, metrics: tuple[str, ...], figure: _Figure) -> None:
    """Distances between solutions per class of pairs (the paper's Fig. 5)."""
    from canon.errors import ConfigError
    from canon.plots import plot_distances
    from canon.repro import class_of
    from canon.zoo import DISTANCE_METRICS

    chosen = metrics or ("euclidean", "geodesic")
    bad = [m for m in chosen if m not in DISTANCE_METRICS]
    if bad:
        raise ConfigError(f"unknown distance `{bad[0]}`; choose from {', '.join(DISTANCE_METRICS)}")
    target = figure.target()
    with open_zoo(app) as zoo:
        entries = _solutions(zoo, selection, 2)
        classes = class_of(entries, selection.by)
        tables = [zoo.barrier_table(entries, metric=m, device=app.device) for m in chosen]
    plot_distances(tables, classes, target, title=figure.title)
    figure.written(app, target, {t.metric: t.to_dict() for t in tables})


@command(name="table", group=plot)
@table_options()
@_figure_options
def table_figure(
    app: App,
    selection: Selection,
    path: str,
    metric: str,
    points: int,
    method: str,
    align: str,
    figure: _Figure,
) -> None:
    """The pairwise barrier or distance table of the selection as a colour matrix."""
    from canon.plots import plot_table

    target = figure.target()
    with open_zoo(app) as zoo:
        entries = selection.choose(zoo, least=2, what="a table")
        result = barrier_table(app, zoo, entries, path, metric, points, method, align=align)
    plot_table(result, target, title=figure.title)
    figure.written(app, target, result.to_dict())


@command(group=plot)
@selection_options
@points_option
@_figure_options
def hamming(app: App, selection: Selection, points: int, figure: _Figure) -> None:
    """Binary networks: error along random flip paths against Hamming distance, raw and
    aligned, per class of pairs within one class (the paper's Figs. 6 and 7)."""
    from canon.plots import plot_hamming_paths
    from canon.repro import path_curves

    target = figure.target()
    measure = functools.partial(
        path_curves, kinds=("random_flip", "random_flip_aligned"), points=points
    )
    curves = _pair_curves(app, selection, measure, within_only=True)
    plot_hamming_paths(curves, target, title=figure.title)
    figure.written(app, target, _curve_data(curves))

"""``canon plot KIND``: the paper's figures from a zoo.

Every plot subcommand selects entries (NAMES, or ``--tag K=V``, default every
solution), groups them into classes by a tag (``--by algo``), reads or computes
what it draws through the zoo (pair results come from its cache when present),
and writes one figure: ``--out FILE`` (its suffix picks the format) or
``KIND.png`` (``--format png|svg|pdf``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from canon.cli._app import App, command, emit
from canon.cli._common import open_zoo, parse_tags, progress
from canon.engine import DEFAULT_PATHS, bend_kind, list_path_kinds

if TYPE_CHECKING:
    from canon.zoo import Entry, Zoo

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


def _figure_options(func: F) -> F:
    """--out, --format and --title, shared by every plot kind."""
    func = click.option("--title", default="", help="Title over the figure.")(func)
    func = click.option(
        "--format", "fmt", default=None, metavar="png|svg|pdf", help="Format (default: png)."
    )(func)
    return click.option(
        "--out", default=None, help="Figure file; its suffix picks the format (default KIND.png)."
    )(func)


def _selection_options(func: F) -> F:
    """NAMES, --tag and --by, shared by the plot kinds over many entries."""
    func = click.option(
        "--by", default="algo", show_default=True, help="Tag whose value is an entry's class."
    )(func)
    func = click.option(
        "--tag", "tags", multiple=True, metavar="K=V", help="Select by tag (repeatable)."
    )(func)
    return click.argument("names", nargs=-1)(func)


def _target(kind: str, out: str | None, fmt: str | None) -> Path:
    """The figure file, checked before any work is done (a bad suffix or format fails)."""
    from canon.plots import output_path

    path, _ = output_path(out if out is not None else kind, fmt)
    return path


def _select(zoo: Zoo, names: Sequence[str], tags: Sequence[str], least: int) -> list[Entry]:
    return zoo.choose(names, parse_tags(tags), kind="solution", least=least, what="this plot")


def _done(app: App, kind: str, path: Path, data: dict[str, Any]) -> None:
    emit(app, {"kind": kind, "out": str(path), "data": data}, lambda: f"wrote {path}")


def _curve_data(curves: dict[str, list[Any]]) -> dict[str, Any]:
    return {cls: [c.to_dict() for c in group] for cls, group in curves.items()}


@command(group=plot)
@_selection_options
@click.option(
    "--kinds",
    default=",".join(DEFAULT_PATHS),
    show_default=True,
    help="Path kinds, comma-separated (one panel each).",
)
@click.option("--points", default=25, show_default=True, help="Points along each path.")
@click.option("--max-pairs", type=int, default=None, help="At most this many pairs per class.")
@_figure_options
def paths(
    app: App,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    by: str,
    kinds: str,
    points: int,
    max_pairs: int | None,
    out: str | None,
    fmt: str | None,
    title: str,
) -> None:
    """Error along paths per class of pairs, mean and std (the paper's Fig. 2)."""
    from canon.errors import ConfigError
    from canon.plots import plot_path_classes
    from canon.repro import class_of, entry_pairs_by_class, path_curves

    comparable = list_path_kinds(comparable=True)
    chosen = [k.strip() for k in kinds.split(",") if k.strip()]
    bad = [k for k in chosen if k not in comparable]
    if not chosen or bad:
        raise ConfigError(
            f"unknown path kind(s) {', '.join(f'`{k}`' for k in bad) or '(none given)'}; "
            f"choose from {', '.join(comparable)}"
        )
    target = _target("paths", out, fmt)
    with open_zoo(app) as zoo:
        entries = _select(zoo, names, tags, 2)
        pairs = entry_pairs_by_class(entries, class_of(entries, by), per_class=max_pairs)
        with progress(app, "pairs") as bar:
            curves = path_curves(zoo, pairs, chosen, points=points, device=app.device, progress=bar)
    plot_path_classes(curves, target, kinds=chosen, title=title)
    _done(app, "paths", target, _curve_data(curves))


@command(group=plot)
@_selection_options
@click.option("--points", default=25, show_default=True, help="Points along each path.")
@_figure_options
def bend(
    app: App,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    by: str,
    points: int,
    out: str | None,
    fmt: str | None,
    title: str,
) -> None:
    """Error along the single-bend paths through the zoo's midpoints (the paper's Fig. 3)."""
    from canon.errors import ConfigError
    from canon.plots import plot_path_classes
    from canon.repro import bend_curves, class_of, entry_pairs_by_class

    target = _target("bend", out, fmt)
    with open_zoo(app) as zoo:
        entries = _select(zoo, names, tags, 2)
        pairs = entry_pairs_by_class(entries, class_of(entries, by))
        with progress(app, "pairs") as bar:
            curves = bend_curves(zoo, pairs, points=points, device=app.device, progress=bar)
    if not curves:
        raise ConfigError(
            "no midpoint entries between the selected pairs; make them with `canon midpoint`"
        )
    order = [bend_kind(p) for p in DEFAULT_PATHS]
    present = {c.kind for group in curves.values() for c in group}
    plot_path_classes(curves, target, kinds=[k for k in order if k in present], title=title)
    _done(app, "bend", target, _curve_data(curves))


@command(group=plot)
@_selection_options
@click.option("--sigma", "sigmas", multiple=True, type=float, help="Noise level (repeatable).")
@click.option("--draws", default=10, show_default=True, help="Noise draws per level.")
@_figure_options
def energy(
    app: App,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    by: str,
    sigmas: tuple[float, ...],
    draws: int,
    out: str | None,
    fmt: str | None,
    title: str,
) -> None:
    """Local energy per class against noise and against test error (the paper's Fig. 1)."""
    from canon.plots import plot_local_energy
    from canon.repro import class_of, energies_by_class

    target = _target("energy", out, fmt)
    with open_zoo(app) as zoo:
        entries = _select(zoo, names, tags, 1)
        classes = class_of(entries, by)
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
    plot_local_energy(energies, target, test_errors=tests, title=title)
    data = {
        cls: [{"test_error": t, **e.to_dict()} for e, t in zip(group, tests[cls], strict=True)]
        for cls, group in energies.items()
    }
    _done(app, "energy", target, data)


@command(name="plane", group=plot)
@click.argument("a")
@click.argument("b")
@click.argument("c", required=False)
@click.option("--grid", default=21, show_default=True, help="Grid points per axis.")
@click.option("--margin", default=0.2, show_default=True, help="Margin around the anchors.")
@_figure_options
def plane_figure(
    app: App,
    a: str,
    b: str,
    c: str | None,
    grid: int,
    margin: float,
    out: str | None,
    fmt: str | None,
    title: str,
) -> None:
    """The plane through A, B and C (default: B aligned to A), raw beside normalized (Fig. 4)."""
    from canon.plots import plot_plane
    from canon.repro import plane_sections

    target = _target("plane", out, fmt)
    with open_zoo(app) as zoo:
        ea, eb = zoo.get(a), zoo.get(b)
        ec = zoo.get(c) if c is not None else None
        raw, normalized = plane_sections(
            zoo, ea, eb, ec, grid=grid, margin=margin, device=app.device
        )
    labels = (a, b, c if c is not None else f"{b} aligned")
    plot_plane(raw, normalized, target, labels=labels, title=title)
    _done(app, "plane", target, {"raw": raw.to_dict(), "normalized": normalized.to_dict()})


@command(group=plot)
@_selection_options
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Distance (repeatable, one panel each); default euclidean and geodesic.",
)
@_figure_options
def distances(
    app: App,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    by: str,
    metrics: tuple[str, ...],
    out: str | None,
    fmt: str | None,
    title: str,
) -> None:
    """Distances between solutions per class of pairs (the paper's Fig. 5)."""
    from canon.errors import ConfigError
    from canon.plots import plot_distances
    from canon.repro import class_of
    from canon.zoo import DISTANCE_METRICS

    chosen = metrics or ("euclidean", "geodesic")
    bad = [m for m in chosen if m not in DISTANCE_METRICS]
    if bad:
        raise ConfigError(f"unknown distance `{bad[0]}`; choose from {', '.join(DISTANCE_METRICS)}")
    target = _target("distances", out, fmt)
    with open_zoo(app) as zoo:
        entries = _select(zoo, names, tags, 2)
        classes = class_of(entries, by)
        tables = [zoo.barrier_table(entries, metric=m, device=app.device) for m in chosen]
    plot_distances(tables, classes, target, title=title)
    _done(app, "distances", target, {t.metric: t.to_dict() for t in tables})


@command(name="table", group=plot)
@click.argument("names", nargs=-1)
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Select by tag (repeatable).")
@click.option("--path", default="geodesic", show_default=True, help="Path kind for barriers.")
@click.option(
    "--metric", default="barrier", show_default=True, help="barrier, excess or a distance."
)
@click.option("--points", default=25, show_default=True, help="Points along each path.")
@_figure_options
def table_figure(
    app: App,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    path: str,
    metric: str,
    points: int,
    out: str | None,
    fmt: str | None,
    title: str,
) -> None:
    """The pairwise barrier or distance table of the selection as a colour matrix."""
    from canon.plots import plot_table

    target = _target("table", out, fmt)
    with open_zoo(app) as zoo:
        entries = _select(zoo, names, tags, 2)
        with progress(app, "pairs") as bar:
            result = zoo.barrier_table(
                entries, path=path, metric=metric, points=points, device=app.device, progress=bar
            )
    plot_table(result, target, title=title)
    _done(app, "table", target, result.to_dict())


@command(group=plot)
@_selection_options
@click.option("--points", default=25, show_default=True, help="Points along each path.")
@_figure_options
def hamming(
    app: App,
    names: tuple[str, ...],
    tags: tuple[str, ...],
    by: str,
    points: int,
    out: str | None,
    fmt: str | None,
    title: str,
) -> None:
    """Binary networks: error along random flip paths against Hamming distance, raw and
    aligned, per class of pairs within one class (the paper's Figs. 6 and 7)."""
    from canon.plots import plot_hamming_paths
    from canon.repro import class_of, entry_pairs_by_class, path_curves

    target = _target("hamming", out, fmt)
    with open_zoo(app) as zoo:
        entries = _select(zoo, names, tags, 2)
        pairs = entry_pairs_by_class(entries, class_of(entries, by), within_only=True)
        with progress(app, "pairs") as bar:
            curves = path_curves(
                zoo,
                pairs,
                ("random_flip", "random_flip_aligned"),
                points=points,
                device=app.device,
                progress=bar,
            )
    plot_hamming_paths(curves, target, title=title)
    _done(app, "hamming", target, _curve_data(curves))

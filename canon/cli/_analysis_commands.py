"""Analysis commands: compare, table, train, energy, plane, midpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from canon._format import pct
from canon._limits import MAX_DRAWS
from canon._options import parse_json, parse_tags
from canon.cli._app import App, command, emit
from canon.cli._common import (
    align_option,
    answers_from_cache,
    barrier_table,
    entry_summary,
    index_path,
    match_option,
    open_zoo,
    plane_options,
    points_option,
    progress,
    table_options,
)
from canon.engine import (
    DEFAULT_PATHS,
    MIDPOINT_LR,
    MIDPOINT_LR_HALVINGS,
    MIDPOINT_PATHS,
    list_algorithms,
    list_path_kinds,
)
from canon.engine.kinds import MIDPOINT_LR_HALVINGS_MAX, MIDPOINT_LR_MAX, PAPER_PROTOCOL
from canon.zoo import EXECUTORS

if TYPE_CHECKING:
    from canon.cli._common import Selection
    from canon.engine import MidpointResult, PlaneResult, TrainProgress

__all__ = ["compare", "energy", "midpoint", "plane", "table", "train"]

# Choices derive from the engine's registries (which load without torch).
COMPARABLE = click.Choice(list_path_kinds(comparable=True))
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _epochs(update: Callable[[int, int], None] | None) -> Callable[[TrainProgress], None] | None:
    """Adapt a ``progress(done, total)`` callback to the trainer's per-epoch reports."""
    if update is None:
        return None
    return lambda p: update(p.epoch, p.epochs)


@command()
@click.argument("a")
@click.argument("b")
@click.option(
    "--path",
    "paths",
    multiple=True,
    type=COMPARABLE,
    help=f"Path kind (repeatable); default {', '.join(DEFAULT_PATHS)}.",
)
@points_option
@match_option
@align_option
@click.option("--plot", "plot_file", default=None, help="Draw the curves to FILE.png/svg/pdf.")
def compare(
    app: App,
    a: str,
    b: str,
    paths: tuple[str, ...],
    points: int,
    method: str,
    align: str,
    plot_file: str | None,
) -> None:
    """Distances between A and B, and the barrier along each path kind."""
    from canon.errors import ConfigError

    if plot_file is not None and not plot_file.lower().endswith(PLOT_SUFFIXES):
        raise ConfigError(f"`--plot` must end in {', '.join(PLOT_SUFFIXES)}, got `{plot_file}`")
    data = None
    if plot_file is None and answers_from_cache(app):
        from canon.zoo import cached_comparison

        data = cached_comparison(
            index_path(app),
            a,
            b,
            paths=paths or DEFAULT_PATHS,
            points=points,
            method=method,
            align=align,
        )
    if data is None:  # a part is not cached (or the request is refused): the full path
        with open_zoo(app) as zoo, progress(app, "paths") as bar:
            result = zoo.compare(
                a,
                b,
                paths=paths or DEFAULT_PATHS,
                points=points,
                method=method,
                device=app.device,
                progress=bar,
                align=align,
            )
        if plot_file is not None:
            from canon.plots import plot_curves

            plot_curves(result.curves, plot_file, title=f"{result.a} vs {result.b}")
            app.log(f"wrote {plot_file}")
        data = result.to_dict()
    from canon.zoo import comparison_text

    answer = data
    emit(app, answer, lambda: comparison_text(answer))


@command()
@table_options(COMPARABLE)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="Where uncached pairs are computed: this process, or tasks on a Ray cluster "
    "(pip install 'canon[ray]').",
)
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="The Ray cluster to run on (e.g. ray://head:10001; default: a new local one).",
)
def table(
    app: App,
    selection: Selection,
    path: str,
    metric: str,
    points: int,
    method: str,
    align: str,
    fmt: str,
    executor: str,
    address: str | None,
) -> None:
    """The pairwise matrix of NAMES (or of the entries with --tag; default all)."""
    if address is not None and executor != "ray":
        raise click.UsageError("--address is for --executor ray")
    result = None
    if answers_from_cache(app):
        from canon.zoo import cached_table

        tags = parse_tags(selection.tags)
        result = cached_table(
            index_path(app),
            selection.names,
            tags,
            kind=selection.kind,
            path=path,
            metric=metric,
            points=points,
            method=method,
            align=align,
        )
    if result is None:  # a pair is not cached (or the request is refused): the full path
        with open_zoo(app) as zoo:
            entries = selection.choose(zoo, least=2, what="`table`")
            result = barrier_table(
                app, zoo, entries, path, metric, points, method, executor, address, align
            ).to_data()
    app.log(f"{result.computed} pair(s) computed, the rest from the cache")
    if app.json or fmt == "json":
        click.echo(result.to_json())
    elif fmt == "csv":
        click.echo(result.to_csv(), nl=False)
    else:
        click.echo(result.to_text())


@command()
@click.option("--arch", required=True, help="Architecture name or module:function.")
@click.option("--config", "config_json", default="{}", help="Architecture config as JSON.")
@click.option("--dataset", required=True, help="Dataset name (see canon.data).")
@click.option("--algo", type=click.Choice(list_algorithms()), default="sgd")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--epochs",
    default=300,
    show_default=True,
    help="Epochs of training: the most with early stopping, all with --no-early-stop.",
)
@click.option(
    "--target-error",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Early stopping: sgd and adv stop at the first epoch whose train error is at most "
    "this (rsgd runs every epoch).",
)
@click.option(
    "--no-early-stop",
    is_flag=True,
    help=f"Run every epoch, whatever the train error. {PAPER_PROTOCOL}",
)
@click.option("--name", required=True, help="The new entry's name.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="A tag (repeatable).")
def train(
    app: App,
    arch: str,
    config_json: str,
    dataset: str,
    algo: str,
    seed: int,
    epochs: int,
    target_error: float,
    no_early_stop: bool,
    name: str,
    tags: tuple[str, ...],
) -> None:
    """Train a network and add it to the zoo (tags algo and seed, train/test error).

    By default training stops early, at the first epoch with zero train error
    (--target-error); --no-early-stop runs the paper's fixed budget instead.
    """
    source = click.get_current_context().get_parameter_source("target_error")
    if no_early_stop and source is not ParameterSource.DEFAULT:
        raise click.UsageError("--target-error and --no-early-stop exclude each other")
    with open_zoo(app) as zoo, progress(app, "epochs") as bar:
        entry, result = zoo.train(
            name=name,
            architecture=arch,
            config=parse_json(config_json),
            dataset=dataset,
            algo=algo,
            seed=seed,
            epochs=epochs,
            target_error=None if no_early_stop else target_error,
            tags=parse_tags(tags),
            device=app.device,
            progress=_epochs(bar),
        )
    emit(
        app,
        {"entry": entry.to_dict(), "epochs": result.epochs},
        lambda: f"trained {result.epochs} epochs; added {entry_summary(entry)}",
    )


@command()
@click.argument("name")
@click.option("--sigma", "sigmas", multiple=True, type=float, help="Noise level (repeatable).")
@click.option(
    "--draws",
    default=10,
    show_default=True,
    type=click.IntRange(1, MAX_DRAWS),
    help="Noise draws per sigma.",
)
def energy(app: App, name: str, sigmas: tuple[float, ...], draws: int) -> None:
    """The local energy (flatness) of an entry on its dataset."""
    with open_zoo(app) as zoo:
        entry = zoo.get(name)
        result = zoo.energy(
            entry, sigmas=sigmas or (0.1, 0.2, 0.3, 0.4, 0.5), draws=draws, device=app.device
        )

    def text() -> str:
        lines = [f"{entry.name}: train error {pct(result.base_error)}", "  sigma   dE (mean ± std)"]
        lines += [
            f"  {s:<6.3g}  {pct(m)} ± {pct(d)}"
            for s, m, d in zip(result.sigmas, result.mean, result.std, strict=True)
        ]
        return "\n".join(lines)

    emit(app, {"name": entry.name, **result.to_dict()}, text)


@command()
@click.argument("a")
@click.argument("b")
@click.argument("c")
@plane_options
@click.option("--normalized", is_flag=True, help="Normalize the three networks first.")
def plane(app: App, a: str, b: str, c: str, grid: int, margin: float, normalized: bool) -> None:
    """Train errors on the plane through A, B and C."""
    with open_zoo(app) as zoo:
        result = zoo.plane(
            a, b, c, grid=grid, margin=margin, normalized=normalized, device=app.device
        )

    emit(app, {"a": a, "b": b, "c": c, **result.to_dict()}, lambda: _plane_text(result, a, b, c))


def _plane_text(result: PlaneResult, a: str, b: str, c: str) -> str:
    """The plane's error grid, with A, B and C after the values nearest the three networks."""
    marks: dict[tuple[int, int], str] = {}
    for (x, y), letter in zip(result.anchors, "ABC", strict=True):
        i = min(range(len(result.alphas)), key=lambda k: abs(result.alphas[k] - x))
        j = min(range(len(result.betas)), key=lambda k: abs(result.betas[k] - y))
        marks[i, j] = marks.get((i, j), "") + letter
    lines = [
        f"train error (%) on the plane through A = {a}, B = {b}, C = {c}",
        "rows alpha, columns beta; a letter follows the grid value nearest each network",
        *(
            f"{letter} at alpha {x:.2f}, beta {y:.2f}"
            for (x, y), letter in zip(result.anchors, "ABC", strict=True)
        ),
        "        " + " ".join(f"{v:>5.2f}   " for v in result.betas).rstrip(),
    ]
    for i, (alpha, row) in enumerate(zip(result.alphas, result.errors, strict=True)):
        cells = (f"{100 * v:>5.1f} {marks.get((i, j), ''):<2}" for j, v in enumerate(row))
        lines.append(f"{alpha:>6.2f}  " + " ".join(cells).rstrip())
    return "\n".join(lines)


@command()
@click.argument("a")
@click.argument("b")
@click.option("--name", required=True, help="The midpoint entry's name.")
@click.option(
    "--path",
    type=click.Choice(MIDPOINT_PATHS),
    default="geodesic",
    show_default=True,
)
@click.option(
    "--epochs",
    default=300,
    show_default=True,
    help="Epochs of training, every one run (the paper's protocol, Fig. 10: 300 epochs, "
    "cosine-annealed).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, max=MIDPOINT_LR_MAX),
    default=MIDPOINT_LR,
    show_default=True,
    help="Starting learning rate (SGD, Nesterov momentum 0.9, cosine-annealed).",
)
@click.option(
    "--lr-halvings",
    type=click.IntRange(min=0, max=MIDPOINT_LR_HALVINGS_MAX),
    default=MIDPOINT_LR_HALVINGS,
    show_default=True,
    help="How many times a training that diverges (loss more than halfway back to chance) "
    "restarts at half the learning rate; 0: never.",
)
def midpoint(
    app: App, a: str, b: str, name: str, path: str, epochs: int, lr: float, lr_halvings: int
) -> None:
    """Optimize a midpoint between A and B and add it to the zoo (kind midpoint)."""
    with open_zoo(app) as zoo, progress(app, "epochs") as bar:
        entry, result = zoo.midpoint(
            a,
            b,
            name=name,
            path=path,
            epochs=epochs,
            lr=lr,
            lr_halvings=lr_halvings,
            device=app.device,
            progress=bar,
        )
    emit(
        app,
        {
            "entry": entry.to_dict(),
            "bend_barrier": result.barrier,
            "lr": result.lr,
            "restarts": result.restarts,
            "curve": result.curve.to_dict(),
        },
        lambda: (
            f"bend barrier {pct(result.barrier)}{_restarted(result)}; added {entry_summary(entry)}"
        ),
    )


def _restarted(result: MidpointResult) -> str:
    """How a midpoint's training was restarted, if it was."""
    if not result.restarts:
        return ""
    times = "once" if result.restarts == 1 else f"{result.restarts} times"
    return f" (training diverged and restarted at half the learning rate {times}: lr {result.lr:g})"

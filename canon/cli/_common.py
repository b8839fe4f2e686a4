"""Helpers the commands share: opening the zoo, progress bars, formatting, and the options
several commands take alike."""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from canon._format import pct
from canon._limits import MAX_GRID
from canon._options import parse_tags
from canon.cli._app import App
from canon.engine import MATCHING_METHODS
from canon.zoo import ALIGN_MODES, SELECTION_KINDS

if TYPE_CHECKING:
    from canon.zoo import Entry, Table, Zoo

__all__ = [
    "Reporter",
    "Selection",
    "align_option",
    "answers_from_cache",
    "barrier_table",
    "entry_summary",
    "index_path",
    "match_option",
    "open_zoo",
    "plane_options",
    "points_option",
    "progress",
    "read_entries",
    "reporter",
    "selection_options",
    "table_options",
    "zoo_path",
]

F = TypeVar("F", bound=Callable[..., Any])

#: ``--points`` of every command that evaluates paths.
points_option = click.option(
    "--points", default=25, show_default=True, help="Points along each path."
)

#: ``--match`` of every command that aligns pairs; choices from the engine's registry.
match_option = click.option(
    "--match",
    "method",
    type=click.Choice(MATCHING_METHODS),
    default="auto",
    show_default=True,
    help="How units are paired: auto (incoming for chains, weight for residual "
    "networks), incoming, weight or activation.",
)

#: ``--align`` of the commands that compare pairs of a zoo's entries.
align_option = click.option(
    "--align",
    type=click.Choice(ALIGN_MODES),
    default="pair",
    show_default=True,
    help="pair: match each pair directly; reference: compose each entry's cached alignment "
    "to its family reference (one matching per entry, not per pair: fast for large tables).",
)


def zoo_path(app: App, create: bool = False) -> Path:
    """The zoo folder the command names; it must hold a zoo unless ``create``."""
    from canon.errors import CorruptZooError
    from canon.zoo import is_zoo, object_count

    path = Path(app.zoo or "zoo")
    if not create and not is_zoo(path):
        if object_count(path):
            raise CorruptZooError(
                f"`{path}` holds objects but no index (canon.sqlite) nor manifest.json: "
                "`canon init` then `canon verify --repair` index them again"
            )
        raise CorruptZooError(
            f"`{path}` is not a zoo (no canon.sqlite or manifest.json); create it with `canon init`"
        )
    return path


def open_zoo(app: App, *, create: bool = False) -> Zoo:
    """The zoo named by ``--zoo`` / ``$CANON_ZOO`` / ``./zoo``; must exist unless ``create``."""
    from canon.zoo import Zoo

    return Zoo.open(zoo_path(app, create), create=create, trust_code=app.trust_code)


@contextmanager
def zoo_made_if_needed(app: App) -> Iterator[Zoo]:
    """The command's zoo, created if needed; should the block fail, what creating it made
    (the folder, ``objects/``, the index) is removed again, so that a failed command
    leaves no new zoo behind. Nothing that was there before is touched."""
    from canon.zoo import INDEX, OBJECTS

    root = Path(app.zoo or "zoo")
    made = [p for p in (root, root / OBJECTS, root / INDEX) if not p.exists()]
    try:
        with open_zoo(app, create=True) as zoo:
            yield zoo
    except BaseException:
        _remove_made(made)
        raise


def _remove_made(made: Sequence[Path]) -> None:
    """Remove the zoo parts in ``made`` (created by this process): an index with SQLite's
    files beside it, and folders only while they are empty."""
    for path in reversed(made):
        if path.name.endswith(".sqlite"):
            for suffix in ("", "-wal", "-shm", "-journal"):
                with suppress(OSError):
                    path.with_name(path.name + suffix).unlink(missing_ok=True)
        elif path.is_dir() and not path.is_symlink():
            for shard in path.iterdir():  # empty once the objects this command wrote are gone
                if shard.is_dir() and not shard.is_symlink():
                    with suppress(OSError):
                        shard.rmdir()
            with suppress(OSError):
                path.rmdir()  # a folder that is not empty holds what others put there: it stays


def index_path(app: App) -> Path:
    """The zoo's index, ready to be read straight (no SQLAlchemy, no torch): first upgraded
    to the current schema, or rebuilt from the manifest, when it is not at it."""
    from canon.zoo import HEAD_REVISION, INDEX, recorded_revision

    path = zoo_path(app, create=False)
    if recorded_revision(path / INDEX) != HEAD_REVISION:
        open_zoo(app).close()
    return path / INDEX


def answers_from_cache(app: App) -> bool:
    """Whether a command may answer from the index alone: the device it names needs no
    check (``auto`` or ``cpu``; any other is checked by the full path, which imports torch)."""
    return app.device in ("auto", "cpu")


def read_entries(app: App, **filters: Any) -> list[Entry]:
    """The zoo's entries matching ``filters``, read straight from the index (no SQLAlchemy,
    no torch) once the index exists at the current schema; it is first upgraded, or
    rebuilt from the manifest, when it is not."""
    from canon.zoo import list_entries

    return list_entries(index_path(app), **filters)


def progress_interval() -> float:
    """Seconds between plain progress lines: ``$CANON_PROGRESS_INTERVAL``, default 10."""
    raw = os.environ.get("CANON_PROGRESS_INTERVAL", "10")
    try:
        value = float(raw)
    except ValueError:
        return 10.0
    return value if math.isfinite(value) and value >= 0 else 10.0


class Reporter:
    """Progress of long work on stderr: a redrawn tqdm bar, or where no terminal redraws,
    a plain line each time ``interval`` seconds have passed (and the last step after one)."""

    def __init__(self, style: str, desc: str, unit: str, interval: float | None = None) -> None:
        self.style = style
        self.desc = desc
        self.unit = unit
        self.interval = progress_interval() if interval is None else interval
        self.started = time.monotonic()
        self.last = self.started
        self.printed = False
        self.bar: Any = None
        if style == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                file=sys.stderr, leave=False, dynamic_ncols=True, desc=desc or None, unit=unit
            )

    def update(self, done: int, total: int, desc: str | None = None) -> None:
        """Report ``done`` steps out of ``total`` (and a new description)."""
        if desc is not None:
            self.desc = desc
        if self.bar is not None:
            if desc is not None:
                self.bar.set_description(desc, refresh=False)
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()
            return
        now = time.monotonic()
        # quiet work stays quiet: a line once a whole interval has passed, and the last
        # step only if an earlier one was reported
        due = now - self.last >= self.interval
        if not (due or (done >= total and self.printed)):
            return
        self.last, self.printed = now, True
        share = f" ({100 * done / total:.0f}%)" if total else ""
        click.echo(
            f"{self.desc}: {done}/{total} {self.unit}{share}, {now - self.started:.0f} s",
            err=True,
        )

    def close(self) -> None:
        """Clear a bar (lines stay)."""
        if self.bar is not None:
            self.bar.close()


@contextmanager
def reporter(app: App, desc: str = "", unit: str = "it") -> Iterator[Reporter | None]:
    """A :class:`Reporter` in the command's progress style, or None when progress is off."""
    style = app.progress_style
    if style is None:
        yield None
        return
    report = Reporter(style, desc, unit)
    try:
        yield report
    finally:
        report.close()


@contextmanager
def progress(app: App, desc: str, unit: str = "it") -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback reporting on stderr, or None when progress is off."""
    with reporter(app, desc, unit) as report:
        yield None if report is None else report.update


@dataclass(frozen=True)
class Selection:
    """The entries a command line names: NAMES, ``--tag K=V`` and (for plots) ``--by``."""

    names: tuple[str, ...]
    tags: tuple[str, ...]
    by: str = "algo"
    kind: str = "solution"

    def choose(self, zoo: Zoo, *, least: int, what: str) -> list[Entry]:
        """The selected entries of ``zoo`` (:meth:`Zoo.choose`; without names, those of
        ``kind``); ``what`` needs ``least``."""
        tags = parse_tags(self.tags)
        return zoo.choose(self.names, tags, kind=self.kind, least=least, what=what)


def _selection(func: F, *, by: bool, kind: bool = False) -> F:
    """NAMES, ``--tag``, (with ``by``) ``--by`` and (with ``kind``) ``--kind`` on ``func``,
    given to it as one :class:`Selection` named ``selection``."""

    @functools.wraps(func)
    def run(*args: Any, names: tuple[str, ...], tags: tuple[str, ...], **kwargs: Any) -> Any:
        extra = {key: kwargs.pop(key) for key in ("by", "kind") if key in kwargs}
        return func(*args, selection=Selection(names, tags, **extra), **kwargs)

    if kind:
        run = click.option(
            "--kind",
            type=click.Choice(SELECTION_KINDS),
            default="solution",
            show_default=True,
            help="Without NAMES, the entries of this kind (midpoints only when asked).",
        )(run)
    if by:
        run = click.option(
            "--by", default="algo", show_default=True, help="Tag whose value is an entry's class."
        )(run)
    run = click.option(
        "--tag", "tags", multiple=True, metavar="K=V", help="Select by tag (repeatable)."
    )(run)
    return cast(F, click.argument("names", nargs=-1)(run))


def selection_options(func: F) -> F:
    """NAMES, ``--tag`` and ``--by`` (entries and their classes), given to the command as
    one :class:`Selection` named ``selection``."""
    return _selection(func, by=True)


def table_options(path_type: click.ParamType[Any] | None = None) -> Callable[[F], F]:
    """NAMES and ``--tag`` (as one :class:`Selection` named ``selection``), ``--path`` (of
    type ``path_type``), ``--metric``, ``--points`` and ``--match``: what a pairwise table
    is of."""

    def decorate(func: F) -> F:
        func = align_option(func)
        func = match_option(func)
        func = points_option(func)
        func = click.option(
            "--metric", default="barrier", show_default=True, help="barrier, excess or a distance."
        )(func)
        func = click.option(
            "--path",
            type=path_type,
            default="geodesic",
            show_default=True,
            help="Path kind for barriers.",
        )(func)
        return _selection(func, by=False, kind=True)

    return decorate


def plane_options(func: F) -> F:
    """``--grid`` and ``--margin`` of a plane through three networks."""
    margin = click.option(
        "--margin", default=0.2, show_default=True, help="Margin around the anchors."
    )
    grid = click.option(
        "--grid",
        default=21,
        show_default=True,
        type=click.IntRange(2, MAX_GRID),
        help="Grid points per axis.",
    )
    return grid(margin(func))


def barrier_table(
    app: App,
    zoo: Zoo,
    entries: Sequence[Entry],
    path: str,
    metric: str,
    points: int,
    method: str,
    executor: str = "local",
    address: str | None = None,
    align: str = "pair",
) -> Table:
    """The pairwise table of ``entries`` (:meth:`Zoo.barrier_table`), with a bar over pairs."""
    with progress(app, "pairs") as bar:
        return zoo.barrier_table(
            entries,
            path=path,
            metric=metric,
            points=points,
            method=method,
            device=app.device,
            progress=bar,
            executor=executor,
            address=address,
            align=align,
        )


def entry_summary(e: Entry) -> str:
    """One line: id prefix, name, family and metrics."""
    metrics = ", ".join(
        f"{k} {pct(v) if k.endswith(('error', 'barrier')) else v}" for k, v in e.metrics.items()
    )
    return f"{e.id[:12]}  {e.name}  ({e.kind}, {e.architecture}, family {e.family[:12]})" + (
        f"  {metrics}" if metrics else ""
    )

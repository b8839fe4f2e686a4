"""Helpers the zoo and analysis commands share: parsing, opening the zoo, formatting."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canon._format import pct
from canon._options import parse_json, parse_tags
from canon.cli._app import App

if TYPE_CHECKING:
    from canon.zoo import Entry, Zoo

__all__ = [
    "entry_dict",
    "entry_summary",
    "open_zoo",
    "parse_json",
    "parse_tags",
    "pct",
    "progress",
    "read_entries",
    "zoo_path",
]


def zoo_path(app: App, create: bool = False) -> Path:
    """The zoo folder the command names; it must hold a zoo unless ``create``."""
    from canon.errors import CorruptZooError
    from canon.zoo import is_zoo

    path = Path(app.zoo or "zoo")
    if not create and not is_zoo(path):
        raise CorruptZooError(
            f"`{path}` is not a zoo (no canon.sqlite or manifest.json); create it with `canon init`"
        )
    return path


def open_zoo(app: App, *, create: bool = False) -> Zoo:
    """The zoo named by ``--zoo`` / ``$CANON_ZOO`` / ``./zoo``; must exist unless ``create``."""
    from canon.zoo import Zoo

    return Zoo.open(zoo_path(app, create), create=create, trust_code=app.trust_code)


def read_entries(app: App, **filters: Any) -> list[Entry]:
    """The zoo's entries matching ``filters``, read straight from the index (no SQLAlchemy,
    no torch) once the index exists at the current schema; it is first upgraded, or
    rebuilt from the manifest, when it is not."""
    from canon.zoo import HEAD_REVISION, INDEX, list_entries, recorded_revision

    path = zoo_path(app, create=False)
    if recorded_revision(path / INDEX) != HEAD_REVISION:
        open_zoo(app).close()
    return list_entries(path / INDEX, **filters)


@contextmanager
def progress(app: App, desc: str, unit: str = "it") -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback drawing a tqdm bar, or None when bars are off."""
    if not app.progress:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def entry_dict(e: Entry) -> dict[str, Any]:
    """JSON-ready form of an entry."""
    return e.to_dict()


def entry_summary(e: Entry) -> str:
    """One line: id prefix, name, family and metrics."""
    metrics = ", ".join(
        f"{k} {pct(v) if k.endswith(('error', 'barrier')) else v}" for k, v in e.metrics.items()
    )
    return f"{e.id[:12]}  {e.name}  ({e.kind}, {e.architecture}, family {e.family[:12]})" + (
        f"  {metrics}" if metrics else ""
    )

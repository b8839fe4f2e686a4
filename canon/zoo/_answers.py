"""Answers read straight from the index and its pair cache: an entry as ``canon show``
gives it, a comparison and a pairwise table when every part of them is cached.

Like :mod:`canon.zoo._listing`, this path imports neither SQLAlchemy, numpy nor torch,
so that a command answered from the cache starts fast. It never computes and never
writes: each function returns None whenever it cannot give exactly what the full
path (:mod:`canon.zoo._analysis` through :class:`~canon.zoo.Zoo`) would, whether a
part is not cached, the request is invalid (the full path then raises its error),
or what ``auto`` matching resolves to is not recorded yet for the family. Keys are
computed by the same function as the full path's (:func:`canon.zoo._keys.pair_hash`).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from canon._format import pct
from canon.engine.kinds import get_matching, list_path_kinds
from canon.errors import CanonError
from canon.zoo._keys import (
    CURVE_FIELDS,
    CURVE_METRICS,
    DISTANCE_METRICS,
    MAX_POINTS,
    pair_hash,
    path_options,
    reference_fields,
)
from canon.zoo._layout import read_connection
from canon.zoo._listing import find_entries, list_entries
from canon.zoo._records import CACHE_VERSION, Entry

__all__ = [
    "EntryDetails",
    "TableData",
    "cached_comparison",
    "cached_table",
    "curve_dict",
    "distances_dict",
    "entry_details",
]

_REQUIRED_DISTANCES = DISTANCE_METRICS[:3]
_REQUIRED_CURVE = CURVE_FIELDS[:6]
_CHUNK = 400  # ids per query: SQLite's bound-parameter limit


@dataclass(frozen=True)
class TableData:
    """A pairwise table as plain lists (what :class:`~canon.zoo.Table` prints and serializes)."""

    names: list[str]
    metric: str
    path: str | None
    matrix: list[list[float]]
    computed: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the fields in order)."""
        return asdict(self)

    def to_json(self) -> str:
        """One JSON object."""
        return json.dumps(self.to_dict())

    def to_csv(self) -> str:
        """The matrix as CSV with a header row and a name column."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["", *self.names])
        for name, row in zip(self.names, self.matrix, strict=True):
            writer.writerow([name, *(f"{v:.6g}" for v in row)])
        return out.getvalue()

    def to_text(self) -> str:
        """The matrix as `canon table` prints it: the metric, then a row per entry (its
        number in brackets), barriers and fractions in percent."""
        metric = self.metric
        if not self.names:
            return f"{metric}\n(no entries)"
        as_pct = metric in ("barrier", "excess") or metric.endswith("fraction")
        cells = [[pct(v) if as_pct else f"{v:.4g}" for v in row] for row in self.matrix]
        width = max(8, *(len(c) for row in cells for c in row))
        label = max(len(n) for n in self.names)
        head = " " * label + "  " + " ".join(f"{i:>{width}}" for i in range(len(self.names)))
        lines = [f"{metric}", head]
        for i, (name, row) in enumerate(zip(self.names, cells, strict=True)):
            lines.append(f"{name:<{label}}  " + " ".join(f"{c:>{width}}" for c in row) + f"  [{i}]")
        return "\n".join(lines)


def comparison_text(comparison: Mapping[str, Any]) -> str:
    """A comparison (its JSON-ready form) as `canon compare` prints it: the distances, then
    each path's barrier and excess in percent."""
    lines = [f"{comparison['a']} vs {comparison['b']}", "distances:"]
    lines += [f"  {k:<26} {v:.4g}" for k, v in comparison["distances"].items()]
    lines.append(f"  {'path':<16} {'barrier':>9} {'excess':>9}")
    lines += [
        f"  {kind:<16} {pct(c['barrier']):>9} {pct(c['excess']):>9}"
        for kind, c in comparison["curves"].items()
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class EntryDetails:
    """An entry with the names of its parents and of its family's reference."""

    entry: Entry
    parent_names: list[str]
    reference: str


def entry_details(index: Path, ref: str) -> EntryDetails | None:
    """The entry ``ref`` names (name, or id) with its parents' and reference's names;
    None when it is not found (the full path then says so, suggesting close names)."""
    try:
        con = read_connection(index)
    except CanonError:
        return None
    try:
        (entry,) = find_entries(con, [ref])
        if entry is None:
            return None
        names = _names(con, [*entry.parents])
        row = con.execute(
            "SELECT e.name FROM families f JOIN entries e ON e.id = f.reference_id WHERE f.key = ?",
            (entry.family,),
        ).fetchone()
    except (sqlite3.Error, ValueError):
        return None
    finally:
        con.close()
    if row is None or any(p not in names for p in entry.parents):
        return None
    return EntryDetails(entry, [names[p] for p in entry.parents], str(row[0]))


def cached_comparison(
    index: Path,
    a: str,
    b: str,
    *,
    paths: Sequence[str],
    points: int,
    method: str,
    align: str = "pair",
) -> dict[str, Any] | None:
    """``Zoo.compare(a, b, paths=paths, points=points, method=method, align=align)
    .to_dict()`` when the distances and every curve are cached, else None."""
    if not _valid_points(points):
        return None
    comparable = list_path_kinds(comparable=True)
    if any(kind not in comparable for kind in paths):
        return None
    try:
        con = read_connection(index)
    except CanonError:
        return None
    try:
        ea, eb = find_entries(con, [a, b])
        if ea is None or eb is None:
            return None
        resolved = _resolve(con, ea, method)
        if resolved is None:
            return None
        reference = _reference(con, ea, align, resolved)
        first, second = sorted((ea, eb), key=lambda e: e.id)
        options = path_options(points, resolved)
        found: dict[str, Mapping[str, Any]] = {}
        for kind in ("distances", *paths):
            key = pair_hash(first, second, kind, options, reference)
            result = _result(con, first.id, second.id, kind, key)
            if result is None:
                return None
            found[kind] = result
    except (CanonError, sqlite3.Error, ValueError):
        return None
    finally:
        con.close()
    dists = distances_dict(found["distances"])
    curves = {kind: curve_dict(found[kind], flipped=ea.id > eb.id) for kind in paths}
    if dists is None or any(c is None for c in curves.values()):
        return None
    return {"a": ea.name, "b": eb.name, "distances": dists, "curves": curves}


def cached_table(
    index: Path,
    names: Sequence[str],
    tags: Mapping[str, object],
    *,
    kind: str | None = None,
    path: str,
    metric: str,
    points: int,
    method: str,
    align: str = "pair",
) -> TableData | None:
    """The table ``Zoo.barrier_table`` gives for the entries ``Zoo.choose`` picks (``names``
    that carry ``tags``; without names every entry of ``kind``, None or ``any`` for all,
    with the tags), when all its pairs are cached, else None."""
    if metric not in CURVE_METRICS + DISTANCE_METRICS or not _valid_points(points):
        return None
    pair_kind = path if metric in CURVE_METRICS else "distances"
    if pair_kind != "distances" and pair_kind not in list_path_kinds(comparable=True):
        return None
    wanted = {k: str(v) for k, v in tags.items()}
    try:
        con = read_connection(index)
    except CanonError:
        return None
    try:
        if names:
            picked = find_entries(con, names)
            if any(e is None for e in picked):
                return None
            chosen = [e for e in picked if e is not None]
            chosen = [e for e in chosen if all(e.tags.get(k) == v for k, v in wanted.items())]
        else:
            chosen = list_entries(index, kind=None if kind == "any" else kind, tags=wanted)
        ids = [e.id for e in chosen]
        if len(chosen) < 2 or len(set(ids)) != len(ids):
            return None
        if len({e.family for e in chosen}) != 1 or (
            pair_kind != "distances" and len({e.dataset for e in chosen}) != 1
        ):
            return None
        resolved = _resolve(con, chosen[0], method)
        if resolved is None:
            return None
        reference = _reference(con, chosen[0], align, resolved)
        options = path_options(points, resolved)
        key = pair_hash(chosen[0], chosen[-1], pair_kind, options, reference)
        found = cached_metrics(con.execute, ids, pair_kind, key, metric)
    except (CanonError, sqlite3.Error, ValueError):
        return None
    finally:
        con.close()
    n = len(chosen)
    rows = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            value = found.get((min(ids[i], ids[j]), max(ids[i], ids[j])))
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            rows[i][j] = rows[j][i] = float(value)
    return TableData(
        names=[e.name for e in chosen],
        metric=metric,
        path=path if pair_kind != "distances" else None,
        matrix=rows,
        computed=0,
        options=({"points": points} if pair_kind != "distances" else {})
        | {"method": resolved}
        | reference_fields(reference),
    )


def distances_dict(raw: object) -> dict[str, Any] | None:
    """``Distances.from_dict(raw).to_dict()`` (None where that would fail)."""
    if not isinstance(raw, Mapping) or not set(raw) <= set(DISTANCE_METRICS):
        return None
    if any(k not in raw for k in _REQUIRED_DISTANCES):
        return None
    return {k: raw[k] for k in DISTANCE_METRICS if raw.get(k) is not None}


def curve_dict(raw: object, *, flipped: bool = False) -> dict[str, Any] | None:
    """``PathCurve.from_dict(raw).to_dict()``, seen from the other end when ``flipped``
    (``reversed_curve``); None where that would fail."""
    if not isinstance(raw, Mapping) or not set(raw) <= set(CURVE_FIELDS):
        return None
    if any(k not in raw for k in _REQUIRED_CURVE):
        return None
    data = {k: raw.get(k, {} if k == "options" else None) for k in CURVE_FIELDS}
    dists = distances_dict(data["distances"])
    if dists is None or not isinstance(data["options"], dict):
        return None
    data["distances"] = dists
    data["options"] = dict(data["options"])
    lists = ("x", "train_error", "train_loss", "test_error", "train_error_std")
    if any(data[k] is not None and not isinstance(data[k], list) for k in lists):
        return None
    if flipped:
        data["x"] = [1.0 - v for v in reversed(data["x"])]
        for k in lists[1:]:
            if data[k] is not None:
                data[k] = list(reversed(data[k]))
    else:
        for k in lists:
            if data[k] is not None:
                data[k] = list(data[k])
    return data


def _valid_points(points: object) -> bool:
    return isinstance(points, int) and not isinstance(points, bool) and 2 <= points <= MAX_POINTS


def _resolve(con: sqlite3.Connection, entry: Entry, method: str) -> str | None:
    """``method`` (registered), or for ``auto`` what the index records it resolves to for
    the entry's family; None when unknown or not recorded."""
    if method == "auto":
        row = con.execute(
            "SELECT method FROM family_matching WHERE family = ? AND cache_version = ?",
            (entry.family, CACHE_VERSION),
        ).fetchone()
        if row is None:
            return None
        method = str(row[0])
    try:
        get_matching(method)
    except CanonError:
        return None
    return method


def _reference(con: sqlite3.Connection, entry: Entry, align: str, method: str) -> str | None:
    """The id of the family reference that pairs are aligned through (``reference``), or
    None for pairs matched directly (``pair``); ValueError where only the full path can
    answer (an unknown mode, a method other than the family's, no reference recorded)."""
    if align == "pair":
        return None
    if align != "reference" or _resolve(con, entry, "auto") != method:
        raise ValueError(f"align `{align}` with `{method}`")
    row = con.execute("SELECT reference_id FROM families WHERE key = ?", (entry.family,)).fetchone()
    if row is None or row[0] is None:
        raise ValueError("no family reference")
    return str(row[0])


def _names(con: sqlite3.Connection, ids: Sequence[str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        marks = ", ".join("?" for _ in chunk)
        names.update(con.execute(f"SELECT id, name FROM entries WHERE id IN ({marks})", chunk))
    return names


def _result(
    con: sqlite3.Connection, a: str, b: str, kind: str, key: str
) -> Mapping[str, Any] | None:
    row = con.execute(
        "SELECT result FROM pair_cache WHERE entry_a = ? AND entry_b = ? AND path_kind = ? "
        "AND options_hash = ? AND cache_version = ?",
        (a, b, kind, key, CACHE_VERSION),
    ).fetchone()
    if row is None:
        return None
    value = json.loads(row[0])
    return value if isinstance(value, dict) else None


Execute = Callable[[str, tuple[Any, ...]], Iterable[Sequence[Any]]]


def cached_metrics(
    execute: Execute, ids: Sequence[str], kind: str, key: str, metric: str
) -> dict[tuple[str, str], object]:
    """The value of ``metric`` in every cached result among the entries ``ids`` (keyed by
    sorted id pair; None where the result holds none), read by ``execute`` (SQL with
    ``?`` parameters, on a connection to the index).

    SQLite hands over each result's ``metric`` alone (``->``, its JSON text as stored),
    so a table of thousands of pairs does not parse thousands of whole curves; an SQLite
    older than 3.38, which lacks ``->``, hands over the whole results instead.
    """
    wanted = sorted(set(ids))
    members = set(wanted)
    found: dict[tuple[str, str], object] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        where = (
            "FROM pair_cache WHERE path_kind = ? AND options_hash = ? AND cache_version = ? "
            f"AND entry_a IN ({marks})"
        )
        params = (kind, key, CACHE_VERSION, *chunk)
        try:
            rows = list(
                execute(f"SELECT entry_a, entry_b, result -> ? {where}", (f"$.{metric}", *params))
            )
            whole = False
        except Exception as exc:  # no `->`: sqlite3's or SQLAlchemy's OperationalError
            if "OperationalError" not in type(exc).__name__:
                raise
            rows = list(execute(f"SELECT entry_a, entry_b, result {where}", params))
            whole = True
        for a, b, text in rows:
            if b not in members:
                continue
            if whole:
                value = json.loads(text)
                found[(a, b)] = value.get(metric) if isinstance(value, dict) else None
            else:
                found[(a, b)] = None if text is None else json.loads(text)
    return found

"""Listing entries straight from the SQLite index (the standard library's sqlite3).

Listing is the one read that must be fast from a cold start (``canon list``):
this path imports neither SQLAlchemy nor torch. It is the only implementation
of the entry query; :meth:`Zoo.select` uses it too. The table and column
names are those of :mod:`canon.zoo._models`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from canon._pins import PIN, split_pin
from canon.zoo._layout import index_error, read_connection
from canon.zoo._records import Entry, check_tags

__all__ = ["dataset_forms", "find_entries", "list_entries"]

_CHUNK = 200  # names per query (each bound twice): under SQLite's parameter limit


def list_entries(
    index: Path,
    *,
    architecture: str | None = None,
    dataset: str | None = None,
    kind: str | None = None,
    tags: Mapping[str, object] | None = None,
) -> list[Entry]:
    """Entries of the index at ``index`` matching every filter and tag, sorted by name."""
    wanted = check_tags(tags)
    where: list[str] = []
    params: list[object] = []
    for column, value in (("architecture", architecture), ("kind", kind)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if dataset is not None:
        forms = dataset_forms(dataset)
        # the pinned ones: the form, then the pin (substr: LIKE would ignore case)
        where.append(
            "(" + " OR ".join(["dataset = ? OR substr(dataset, 1, ?) = ?"] * len(forms)) + ")"
        )
        for form in forms:
            params += [form, len(form + PIN), form + PIN]
    for key, value in wanted.items():
        where.append("id IN (SELECT entry_id FROM tags WHERE key = ? AND value = ?)")
        params += [key, value]
    condition = " AND ".join(where) or "1"
    con = read_connection(index)
    try:
        return _select(con, condition, params)
    except sqlite3.Error as exc:
        raise index_error(index, exc) from None
    finally:
        con.close()


def dataset_forms(dataset: str) -> list[str]:
    """The recorded specs a dataset filter names: as typed (without a pin) and, for a
    path, with the path absolute; an entry matches any of them, pinned or not
    (:mod:`canon._pins`)."""
    base = split_pin(dataset)[0]
    name, colon, path = base.partition(":")
    if not colon or not path:
        return [base]
    whole = f"{name}:{os.path.abspath(os.path.expanduser(path))}"
    return list(dict.fromkeys([base, whole]))


def find_entries(con: sqlite3.Connection, refs: Sequence[str]) -> list[Entry | None]:
    """The entry each of ``refs`` names (by name, else a 64-character id as its id, as
    :meth:`Index.get <canon.zoo.Index.get>` finds them), None where none is, read on the
    open connection ``con`` to the index."""
    found: list[Entry] = []
    for start in range(0, len(refs), _CHUNK):
        chunk = list(refs[start : start + _CHUNK])
        marks = ", ".join("?" for _ in chunk)
        found += _select(con, f"name IN ({marks}) OR id IN ({marks})", [*chunk, *chunk])
    by_name = {e.name: e for e in found}
    by_id = {e.id: e for e in found}
    return [by_name.get(r) or (by_id.get(r) if len(r) == 64 else None) for r in refs]


def _select(con: sqlite3.Connection, condition: str, params: Sequence[object]) -> list[Entry]:
    """The entries where ``condition`` (SQL on the entries table, with ``params``) holds,
    with their tags and parents, sorted by name."""
    matching = f"SELECT id FROM entries WHERE {condition}"
    rows = con.execute(
        "SELECT id, name, architecture, config, family, dataset, kind, created, metrics "
        f"FROM entries WHERE {condition} ORDER BY name",
        params,
    ).fetchall()
    entry_tags: dict[str, dict[str, str]] = {}
    for entry_id, key, value in con.execute(
        f"SELECT entry_id, key, value FROM tags WHERE entry_id IN ({matching})", params
    ):
        entry_tags.setdefault(entry_id, {})[key] = value
    parents: dict[str, list[str]] = {}
    for child, parent in con.execute(
        "SELECT child_id, parent_id FROM parents "
        f"WHERE child_id IN ({matching}) ORDER BY child_id, position",
        params,
    ):
        parents.setdefault(child, []).append(parent)
    return [
        Entry(
            id=entry_id,
            name=name,
            architecture=arch,
            config=json.loads(config),
            family=family,
            dataset=data,
            kind=entry_kind,
            tags=dict(sorted(entry_tags.get(entry_id, {}).items())),
            parents=tuple(parents.get(entry_id, ())),
            metrics=json.loads(metrics),
            created=datetime.fromisoformat(created).replace(tzinfo=UTC),
        )
        for entry_id, name, arch, config, family, data, entry_kind, created, metrics in rows
    ]

"""``manifest.json``: the portable list of a zoo's entries (what travels with the objects).

The index (``canon.sqlite``) is derived data: a zoo folder holding only
``manifest.json`` and ``objects/`` gets its index rebuilt on first open, every
entry re-checked against its object as ``add`` checks it. The same format
travels through the Hub, where it comes from strangers: :func:`parse_manifest`
checks every field before anything is read or written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from canon.errors import CanonError, InvalidManifestError
from canon.zoo._layout import MANIFEST
from canon.zoo._objects import check_sha
from canon.zoo._records import Entry, check_kind, check_metrics, check_name, check_tags
from canon.zoo._store import ZooStore

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "Manifest",
    "import_entries",
    "manifest",
    "object_path",
    "parse_manifest",
    "write_manifest",
]

SCHEMA_VERSION = 1
_MAX_TEXT = 256


def object_path(entry_id: str) -> str:
    """Where an entry's object lives, relative to the zoo root (and in a Hub repository)."""
    return f"objects/{entry_id[:2]}/{entry_id}.safetensors"


def manifest(zoo: ZooStore) -> dict[str, Any]:
    """The zoo's entries, families and references as a JSON-ready dict."""
    entries = zoo.entries()
    references = {}
    for e in entries:
        if e.family not in references:
            references[e.family] = zoo.reference(e).name
    return {
        "format": "canon-zoo",
        "schema_version": SCHEMA_VERSION,
        "entries": [{**e.to_dict(), "object": object_path(e.id)} for e in entries],
        "references": dict(sorted(references.items())),
    }


def write_manifest(zoo: ZooStore) -> Path:
    """Write ``manifest.json`` atomically (temp file, fsync, rename); returns its path."""
    target = zoo.root / MANIFEST
    text = json.dumps(manifest(zoo), indent=1, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=zoo.root)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: entries in import order (references first, parents before children)."""

    entries: tuple[Mapping[str, Any], ...]
    references: Mapping[str, str]


def parse_manifest(data: object, *, source: str, trusted: bool = True) -> Manifest:
    """Check every field of a manifest and order its entries for import.

    Raises :class:`InvalidManifestError` (naming ``source``) for an unknown
    format or schema version, a missing or mistyped field, an id that is not a
    sha256, an object path other than ``objects/ab/<id>.safetensors``, an invalid
    name, kind, tag or metric, duplicate ids or names, or parents and references
    that point outside the manifest. Unless ``trusted``, user architectures
    (``module:function``) are refused too: naming one would import and call
    code chosen by whoever wrote the manifest.
    """

    def fail(message: str) -> InvalidManifestError:
        return InvalidManifestError(f"{source}: {message}", source=source)

    if not isinstance(data, dict):
        raise fail("a manifest is a JSON object")
    if data.get("format") != "canon-zoo" or data.get("schema_version") != SCHEMA_VERSION:
        raise fail(
            f"format {data.get('format')!r}, schema version {data.get('schema_version')!r}; "
            f"this canon reads canon-zoo version {SCHEMA_VERSION} (upgrade canon for newer ones)"
        )
    raw_entries = data.get("entries")
    references = data.get("references", {})
    if not isinstance(raw_entries, list) or not isinstance(references, dict):
        raise fail("`entries` must be a list and `references` an object")
    entries: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    for position, raw in enumerate(raw_entries):
        try:
            entry = _check_entry(raw, trusted)
        except (CanonError, TypeError, ValueError, KeyError) as exc:
            label = raw.get("name") if isinstance(raw, dict) else None
            raise fail(f"entry {position} ({label!r}): {exc}") from None
        if entry["id"] in entries or entry["name"] in names:
            raise fail(f"entry `{entry['name']}` ({entry['id'][:12]}…) is listed twice")
        entries[entry["id"]] = entry
        names.add(entry["name"])
    for entry in entries.values():
        missing = [p for p in entry["parents"] if p not in entries]
        if missing:
            raise fail(f"entry `{entry['name']}` has parents outside the manifest: {missing}")
    for family, name in references.items():
        if not isinstance(family, str) or name not in names:
            raise fail(f"reference {family!r} -> {name!r} names no entry of the manifest")
    return Manifest(_import_order(entries, set(references.values())), dict(references))


def _check_entry(raw: object, trusted: bool) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TypeError("an entry is a JSON object")
    entry_id = check_sha(_typed(raw, "id", str))
    if raw.get("object") != object_path(entry_id):
        raise ValueError(f"object path {raw.get('object')!r} is not {object_path(entry_id)!r}")
    architecture = _typed(raw, "architecture", str)
    if not trusted and ":" in architecture:
        raise ValueError(
            f"user architecture `{architecture}` refused: a pulled manifest may only name "
            "registered architectures (register yours with canon.architectures.register)"
        )
    dataset = raw.get("dataset")
    for label, text in (("architecture", architecture), ("dataset", dataset or "")):
        if len(text) > _MAX_TEXT or any(ord(c) < 32 for c in text):
            raise ValueError(f"{label} must be at most {_MAX_TEXT} printable characters")
    if dataset is not None and not isinstance(dataset, str):
        raise TypeError("dataset must be a string or null")
    parents = _typed(raw, "parents", list, default=[])
    created = raw.get("created")
    return {
        "id": entry_id,
        "name": check_name(raw.get("name")),
        "architecture": architecture,
        "config": _typed(raw, "config", dict),
        "family": _typed(raw, "family", str),
        "dataset": dataset,
        "kind": check_kind(raw.get("kind", "solution")),
        "tags": check_tags(_typed(raw, "tags", dict, default={})),
        "parents": [check_sha(p) if isinstance(p, str) else _bad_parent(p) for p in parents],
        "metrics": json.loads(check_metrics(_typed(raw, "metrics", dict, default={}))),
        "created": None if created is None else datetime.fromisoformat(_typed(raw, "created", str)),
    }


def _typed(raw: Mapping[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    value = raw.get(key, default)
    if value is ... or not isinstance(value, kind):
        raise TypeError(f"`{key}` must be a {kind.__name__}, got {value!r}")
    return value


def _bad_parent(value: object) -> str:
    raise TypeError(f"a parent is an entry id, got {value!r}")


def _import_order(
    entries: Mapping[str, dict[str, Any]], reference_names: set[str]
) -> tuple[dict[str, Any], ...]:
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(entry: dict[str, Any]) -> None:
        if entry["id"] in seen:
            return
        seen.add(entry["id"])
        for parent in entry["parents"]:
            visit(entries[parent])
        ordered.append(entry)

    for entry in sorted(
        entries.values(), key=lambda e: (e["name"] not in reference_names, e["name"])
    ):
        visit(entry)
    return tuple(ordered)


def import_entries(
    zoo: ZooStore,
    entries: Sequence[Mapping[str, Any]],
    source: Callable[[str], Path],
    *,
    names: Mapping[str, str] | None = None,
) -> list[Entry]:
    """Add checked manifest entries (in order), reading each object from ``source(id)``.

    Each entry is checked as ``add`` checks it, keeps its metrics and creation
    time, and is added under ``names.get(id, name)``; its object must hash to
    its id and its family must match. All or nothing: on any failure the
    entries added so far are removed again before the error propagates, with
    the objects this call wrote (objects that were already there stay).
    """
    added: list[tuple[Entry, bool]] = []
    try:
        for entry in entries:
            path = source(entry["id"])
            if not path.is_file():
                raise InvalidManifestError(
                    f"the manifest lists `{entry['name']}` but its object {path} is missing"
                )
            existed = zoo.objects.exists(entry["id"])
            new = ZooStore.add(  # metrics are the manifest's, not recomputed
                zoo,
                path,
                name=(names or {}).get(entry["id"], entry["name"]),
                architecture=entry["architecture"],
                config=entry["config"],
                dataset=entry["dataset"],
                tags=entry["tags"],
                kind=entry["kind"],
                parents=list(entry["parents"]),
                metrics=entry["metrics"],
                created=entry["created"],
            )
            added.append((new, existed))
            if new.id != entry["id"] or new.family != entry["family"]:
                raise InvalidManifestError(
                    f"the object of `{entry['name']}` is {new.id} of family {new.family[:12]}…, "
                    f"not {entry['id']} of family {entry['family'][:12]}… as the manifest says"
                )
    except BaseException:
        for done, existed in reversed(added):
            zoo.rm(done, keep_object=existed)
        raise
    return [new for new, _ in added]

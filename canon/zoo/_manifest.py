"""``manifest.json``: the portable list of a zoo's entries (what travels with the objects).

The index (``canon.sqlite``) is derived data: a zoo folder holding only
``manifest.json`` and ``objects/`` gets its index rebuilt on first open, every
entry re-checked against its object as ``add`` checks it. The same format
travels through the Hub, where it comes from strangers: :func:`parse_manifest`
checks every field before anything is read or written.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canon._limits import clip
from canon.errors import CanonError, InvalidManifestError, UntrustedCodeError
from canon.zoo._ingest import Incoming, Prepared

if TYPE_CHECKING:
    from canon.zoo._zoo import Zoo
from canon.zoo._layout import MANIFEST
from canon.zoo._merge import Merge, SyncRecord
from canon.zoo._objects import check_sha, sha256_bytes
from canon.zoo._records import (
    Entry,
    EntryFields,
    check_dataset,
    check_dataset_source,
    check_kind,
    check_metrics,
    check_name,
    check_tags,
    entry_fields,
)
from canon.zoo._trust import check_trusted

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "Manifest",
    "check_object",
    "import_entries",
    "manifest",
    "manifest_fields",
    "object_path",
    "parse_manifest",
    "write_manifest",
]

SCHEMA_VERSION = 1
_MAX_TEXT = 256


def object_path(entry_id: str) -> str:
    """Where an entry's object lives, relative to the zoo root (and in a Hub repository)."""
    return f"objects/{entry_id[:2]}/{entry_id}.safetensors"


def manifest(zoo: Zoo) -> dict[str, Any]:
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


def write_manifest(zoo: Zoo) -> Path:
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
    """A checked manifest: entries in import order (references first, parents before children),
    and, when parsed with ``skip_bad``, the entries left out (``label: reason``)."""

    entries: tuple[Mapping[str, Any], ...]
    references: Mapping[str, str]
    rejected: tuple[str, ...] = ()


def parse_manifest(
    data: object, *, source: str, trusted: bool = True, skip_bad: bool = False
) -> Manifest:
    """Check every field of a manifest and order its entries for import.

    Raises :class:`InvalidManifestError` (naming ``source``) for an unknown
    format or schema version, a missing or mistyped field, an id that is not a
    sha256, an object path other than ``objects/ab/<id>.safetensors``, an invalid
    name, kind, dataset, tag or metric, duplicate ids or names, or parents and
    references that point outside the manifest. Unless ``trusted``, user
    architectures (``module:function``) are refused too
    (:class:`~canon.errors.UntrustedCodeError`): naming one would import and
    call code chosen by whoever wrote the manifest; for the same reason a dataset
    that names a file (``loader:PATH``, which canon would open) is refused
    (:func:`~canon.zoo._records.check_dataset_source`). The zoo's own manifest is
    parsed trusted: its datasets are what its users typed with ``add``; a pulled
    one is trusted only with ``--trust-code``. With ``skip_bad`` a bad
    entry (and its descendants) is left out and listed in ``rejected``
    instead; only a manifest that is not one at all still raises.
    """

    def fail(message: str) -> InvalidManifestError:
        return InvalidManifestError(f"{clip(source)}: {message}", source=source)

    if not isinstance(data, dict):
        raise fail("a manifest is a JSON object")
    if data.get("format") != "canon-zoo" or data.get("schema_version") != SCHEMA_VERSION:
        raise fail(
            f"format {clip(repr(data.get('format')), 40)}, schema version "
            f"{clip(repr(data.get('schema_version')), 40)}; this canon reads canon-zoo version "
            f"{SCHEMA_VERSION} (upgrade canon for newer ones)"
        )
    raw_entries = data.get("entries")
    references = data.get("references", {})
    if not isinstance(raw_entries, list) or not isinstance(references, dict):
        raise fail("`entries` must be a list and `references` an object")
    entries: dict[str, dict[str, Any]] = {}
    names: set[str] = set()
    rejected: list[str] = []

    def reject(label: str, reason: str) -> None:
        if not skip_bad:
            raise fail(f"{label}: {reason}")
        rejected.append(f"{label}: {reason}")

    for position, raw in enumerate(raw_entries):
        name = raw.get("name") if isinstance(raw, dict) else None
        label = f"entry {position} ({clip(repr(name), 80)})"
        try:
            entry = _check_entry(raw, trusted, source)
        except UntrustedCodeError:
            if not skip_bad:
                raise
            reject(label, "names code (module:function) and the manifest is not trusted")
            continue
        except (CanonError, TypeError, ValueError, KeyError) as exc:
            reject(label, clip(str(exc)))
            continue
        if entry["id"] in entries or entry["name"] in names:
            reject(f"entry `{entry['name']}` ({entry['id'][:12]}…)", "is listed twice")
            continue
        entries[entry["id"]] = entry
        names.add(entry["name"])
    orphaned = True
    while orphaned:  # entries whose parents are missing (or were left out), transitively
        orphaned = False
        for entry_id, entry in list(entries.items()):
            missing = [p for p in entry["parents"] if p not in entries]
            if missing:
                reject(f"entry `{entry['name']}`", f"has parents outside the manifest: {missing}")
                del entries[entry_id]
                names.discard(entry["name"])
                orphaned = True
    kept = {}
    for family, name in references.items():
        if not isinstance(family, str) or name not in names:
            reject(f"reference {clip(repr(family), 80)}", "names no entry of the manifest")
            continue
        kept[family] = name
    return Manifest(_import_order(entries, set(kept.values())), kept, tuple(rejected))


def _check_entry(raw: object, trusted: bool, source: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TypeError("an entry is a JSON object")
    entry_id = check_sha(_typed(raw, "id", str))
    if raw.get("object") != object_path(entry_id):
        raise ValueError(
            f"object path {clip(repr(raw.get('object')), 80)} is not "
            f"'objects/{entry_id[:2]}/{entry_id[:12]}….safetensors'"
        )
    architecture = _typed(raw, "architecture", str)
    if len(architecture) > _MAX_TEXT or not architecture.isprintable():
        raise ValueError(f"architecture must be at most {_MAX_TEXT} printable characters")
    name = check_name(raw.get("name"))
    check_trusted(architecture, trusted=trusted, source=f"{clip(source)}: entry `{name}`")
    parents = _typed(raw, "parents", list, default=[])
    created = raw.get("created")
    return {
        "id": entry_id,
        "name": name,
        "architecture": architecture,
        "config": _typed(raw, "config", dict),
        "family": _typed(raw, "family", str),
        "dataset": check_dataset_source(
            check_dataset(raw.get("dataset")), trusted=trusted, source="the entry"
        ),
        "kind": check_kind(raw.get("kind", "solution")),
        "tags": check_tags(_typed(raw, "tags", dict, default={})),
        "parents": [check_sha(p) if isinstance(p, str) else _bad_parent(p) for p in parents],
        "metrics": json.loads(check_metrics(_typed(raw, "metrics", dict, default={}))),
        "created": None if created is None else datetime.fromisoformat(_typed(raw, "created", str)),
    }


def _typed(raw: Mapping[str, Any], key: str, kind: type, default: Any = ...) -> Any:
    value = raw.get(key, default)
    if value is ... or not isinstance(value, kind):
        raise TypeError(f"`{key}` must be a {kind.__name__}, got {clip(repr(value), 80)}")
    return value


def _bad_parent(value: object) -> str:
    raise TypeError(f"a parent is an entry id, got {clip(repr(value), 80)}")


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
    zoo: Zoo,
    entries: Sequence[Mapping[str, Any]],
    source: Callable[[str], Path],
    *,
    names: Mapping[str, str] | None = None,
    merged: Merge | None = None,
    synced: SyncRecord | None = None,
) -> list[Entry]:
    """Add checked manifest entries (in order), reading each object from ``source(id)``;
    a pull's ``merged`` edits and ``synced`` record join the transaction.

    Each entry is checked as ``add`` checks it, keeps its metrics and creation
    time, and is added under ``names.get(id, name)``; its object must hash to
    its id and its family must match. All or nothing: every entry is checked
    before anything is written (so a bad one changes nothing), and the entries
    are recorded in one index transaction (:meth:`Zoo.add_many`), so that a
    failure or a kill midway adds none of them.
    """
    for entry in entries:  # checks only: the weights are read and dropped
        check_object(zoo, entry, source)
    return zoo.add_many(
        [
            Incoming(
                functools.partial(check_object, zoo, entry, source),
                list(entry["parents"]),
                manifest_fields(entry, (names or {}).get(entry["id"], entry["name"])),
            )
            for entry in entries
        ],
        merged=merged,
        synced=synced,
    )


def manifest_fields(entry: Mapping[str, Any], name: str) -> EntryFields:
    """A checked manifest entry's fields as the index stores them (metrics as recorded)."""
    return entry_fields(
        name, entry["kind"], entry["tags"], entry["metrics"], entry["dataset"], entry["created"]
    )


def check_object(zoo: Zoo, entry: Mapping[str, Any], source: Callable[[str], Path]) -> Prepared:
    """The entry's object read and checked against the entry: it must be the bytes canon
    writes for these weights, this architecture and config (so its id and family agree)."""
    path = source(entry["id"])
    if not path.is_file():
        raise InvalidManifestError(
            f"the manifest lists `{entry['name']}` but its object {clip(str(path))} is missing"
        )
    zoo.check_buildable(entry["architecture"], f"manifest entry `{entry['name']}`")
    prepared = zoo.prepare(path, entry["architecture"], entry["config"])
    sha = sha256_bytes(prepared.data)
    if sha != entry["id"] or prepared.family != entry["family"]:
        raise InvalidManifestError(
            f"the object of `{entry['name']}` is {sha[:12]}… of family {prepared.family[:12]}…, "
            f"not {entry['id'][:12]}… of family {str(entry['family'])[:12]}… as the manifest says"
        )
    return prepared

"""``manifest.json``: the portable list of a zoo's entries (what travels with the objects).

The index (``canon.sqlite``) is derived data: a zoo folder holding only
``manifest.json`` and ``objects/`` gets its index rebuilt on first open, every
entry re-checked against its object as ``add`` checks it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from canon.errors import CorruptZooError
from canon.zoo._layout import MANIFEST
from canon.zoo._store import ZooStore

__all__ = ["MANIFEST", "SCHEMA_VERSION", "import_manifest", "manifest", "write_manifest"]

SCHEMA_VERSION = 1


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
        "entries": [
            {**e.to_dict(), "object": f"objects/{e.id[:2]}/{e.id}.safetensors"} for e in entries
        ],
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


def import_manifest(zoo: ZooStore, data: Mapping[str, Any]) -> int:
    """Add every entry of a manifest whose object is in ``zoo.objects``; returns the count.

    References are added first so that each family keeps its reference, and
    parents before their children. Each entry is checked as ``add`` checks it,
    and its object must hash to its id.
    """
    if data.get("format") != "canon-zoo" or data.get("schema_version") != SCHEMA_VERSION:
        raise CorruptZooError(
            f"{MANIFEST} has format {data.get('format')!r}, schema version "
            f"{data.get('schema_version')!r}; this canon reads canon-zoo version {SCHEMA_VERSION}"
        )
    entries = {e["id"]: e for e in data["entries"]}
    reference_names = set(data.get("references", {}).values())
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(entry: dict[str, Any]) -> None:
        if entry["id"] in seen:
            return
        seen.add(entry["id"])
        for parent in entry.get("parents", []):
            if parent in entries:
                visit(entries[parent])
        ordered.append(entry)

    for entry in sorted(
        entries.values(), key=lambda e: (e["name"] not in reference_names, e["name"])
    ):
        visit(entry)
    for entry in ordered:
        path = zoo.objects.path(entry["id"])
        if not path.is_file():
            raise CorruptZooError(f"{MANIFEST} lists `{entry['name']}` but {path} is missing")
        added = ZooStore.add(  # the manifest's metrics are kept as they are
            zoo,
            path,
            name=entry["name"],
            architecture=entry["architecture"],
            config=entry["config"],
            dataset=entry.get("dataset"),
            tags=entry.get("tags") or {},
            kind=entry.get("kind", "solution"),
            parents=list(entry.get("parents", [])),
            metrics=entry.get("metrics") or {},
        )
        if added.id != entry["id"]:
            raise CorruptZooError(
                f"object of `{entry['name']}` hashes to {added.id}, not its id {entry['id']}"
            )
    return len(ordered)

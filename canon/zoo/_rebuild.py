"""Rebuilding a zoo's index from ``manifest.json`` and the objects, without risk to either.

A zoo travels as ``manifest.json`` + ``objects/``; its index is derived data.
A rebuild writes a new index under a temporary name in the zoo folder, checks
every entry as ``add`` checks it (its object present and hashing to its id,
its architecture allowed and matching the weights), and only when all is well
publishes the index with a hard link, which cannot overwrite an index another
process published first. The rebuild never writes, moves or deletes an object,
and on failure it removes only the files it made: the folder is left as it was.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canon._limits import clip, loads_json
from canon.errors import CanonError, CorruptZooError, InvalidManifestError, UntrustedCodeError
from canon.zoo._layout import (
    INDEX,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    OBJECTS,
    check_folder,
    rebuild_path,
)
from canon.zoo._manifest import Manifest, check_object, manifest_fields, parse_manifest
from canon.zoo._migrate import upgrade
from canon.zoo._objects import sha256_file

if TYPE_CHECKING:
    from canon.zoo._zoo import Zoo

__all__ = ["Rebuild", "index_listed_entry", "read_manifest", "rebuild_index"]


@dataclass(frozen=True)
class Rebuild:
    """What a rebuild indexed, and the manifest entries it skipped (``name: reason``)."""

    indexed: tuple[str, ...]
    skipped: tuple[str, ...]


def read_manifest(root: Path, *, skip_bad: bool = False) -> Manifest:
    """The zoo's own ``manifest.json``, checked (bounded size and nesting, every field;
    with ``skip_bad`` bad entries are left out and listed, see :func:`parse_manifest`)."""
    path = root / MANIFEST
    where = f"`{path}`"
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InvalidManifestError(f"{where} is larger than {MAX_MANIFEST_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise CorruptZooError(f"{where} cannot be read: {exc.strerror or exc}") from None
    data = loads_json(raw, what=MANIFEST, error=lambda m: InvalidManifestError(m, source=str(path)))
    # Code architectures are checked per entry (trust, and a clear skip on repair).
    return parse_manifest(data, source=MANIFEST, trusted=True, skip_bad=skip_bad)


def rebuild_index(
    root: Path,
    zoo_type: type[Zoo],
    *,
    trust_code: bool,
    skip_bad: bool = False,
    publish: bool = True,
) -> Rebuild:
    """Build the index of the zoo at ``root`` from its manifest and objects.

    A bad entry (object missing or damaged, architecture refused or not
    matching the weights) stops the rebuild with one error naming it, unless
    ``skip_bad``, which leaves it (and its descendants) out and reports it.
    ``publish=False`` builds in a temporary folder outside the zoo and throws
    the result away: a check that writes nothing in the zoo. ``zoo_type`` is
    the zoo class, whose ``add_prepared`` indexes each entry.
    """
    check_folder(root)
    if publish:
        for suffix in ("-wal", "-shm"):
            stale = root / (INDEX + suffix)
            if stale.exists():
                raise CorruptZooError(
                    f"`{stale}` belongs to a lost index and would corrupt a rebuilt one; "
                    "move it out of the zoo, then retry"
                )
    try:
        manifest = read_manifest(root, skip_bad=skip_bad)
    except InvalidManifestError as exc:
        raise InvalidManifestError(_cannot(root, str(exc)), source=exc.source) from None
    with tempfile.TemporaryDirectory(prefix="canon-rebuild-") as scratch:
        tmp = rebuild_path(root if publish else Path(scratch))
        made = [tmp.with_name(tmp.name + s) for s in ("", "-wal", "-shm", "-journal")]
        try:
            upgrade(tmp)
            store = zoo_type(root, index=tmp, trust_code=trust_code)
            try:
                result = _index_entries(store, manifest, skip_bad)
            finally:
                store.close()
            if publish:
                _publish(tmp, root / INDEX)
            return result
        except OSError as exc:
            if isinstance(exc, CanonError):
                raise
            raise CorruptZooError(
                f"cannot rebuild the index of `{root}`: {exc.strerror or exc}; nothing was changed"
            ) from None
        finally:
            for path in made:
                path.unlink(missing_ok=True)


def _index_entries(store: Zoo, manifest: Manifest, skip_bad: bool) -> Rebuild:
    indexed: list[str] = []
    skipped: dict[str, str] = {}  # id -> "name: reason"
    for entry in manifest.entries:
        lost = [p for p in entry["parents"] if p in skipped]
        try:
            if lost:
                raise CorruptZooError(f"its parent {skipped[lost[0]].split(':')[0]} is left out")
            index_listed_entry(store, entry)
        except CanonError as exc:
            if not skip_bad:
                if isinstance(exc, UntrustedCodeError):
                    raise
                raise CorruptZooError(
                    _cannot(store.root, f"entry `{entry['name']}`: {clip(str(exc))}")
                ) from None
            skipped[entry["id"]] = f"{entry['name']}: {clip(str(exc), 400)}"
            continue
        indexed.append(entry["name"])
    return Rebuild(tuple(indexed), (*manifest.rejected, *skipped.values()))


def _cannot(root: Path, detail: str) -> str:
    """The message of a failed rebuild: the way forward first, then what is wrong."""
    return (
        f"`{root}`: cannot rebuild the index from {MANIFEST}; nothing was changed (`canon "
        f"verify` lists the bad entries, `canon verify --repair` indexes the rest): {detail}"
    )


def index_listed_entry(store: Zoo, entry: Mapping[str, Any]) -> None:
    """Index one manifest entry whose object must already be in place, intact."""
    sha = entry["id"]
    path = store.objects.path(sha)
    where = f"{OBJECTS}/{sha[:2]}/{sha[:12]}…"  # the id's start is enough to find it
    if not path.is_file():
        raise CorruptZooError(f"its object {where} is missing")
    if sha256_file(path) != sha:
        raise CorruptZooError(f"its object {where} is damaged (its bytes no longer hash to its id)")
    prepared = check_object(store, entry, store.objects.path)
    fields = manifest_fields(entry, entry["name"])
    store.add_prepared(prepared, list(entry["parents"]), fields, store_object=False)


def _publish(tmp: Path, index: Path) -> None:
    """Make the finished index at ``tmp`` the zoo's, unless another process was first."""
    con = sqlite3.connect(tmp)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    try:
        os.link(tmp, index)
    except FileExistsError:
        return  # a concurrent opener rebuilt it from the same manifest
    except OSError:  # a file system without hard links
        if index.exists():
            return
        os.replace(tmp, index)
    fd = os.open(index.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

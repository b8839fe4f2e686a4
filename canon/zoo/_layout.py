"""A zoo folder's layout, read-only access to its index, and its schema revision.

Everything here works without SQLAlchemy (``canon list`` starts fast).
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
from pathlib import Path
from urllib.parse import quote

from canon._limits import loads_json
from canon.errors import CanonError, CorruptZooError, ReadOnlyZooError, ZooError

__all__ = [
    "HEAD_REVISION",
    "INDEX",
    "MANIFEST",
    "OBJECTS",
    "check_folder",
    "index_error",
    "is_writable",
    "is_zoo",
    "listed_ids",
    "object_count",
    "read_connection",
    "rebuild_path",
    "recorded_revision",
    "stale_rebuilds",
]

INDEX = "canon.sqlite"
OBJECTS = "objects"
MANIFEST = "manifest.json"

# The newest migration's id. An index already at this revision opens without Alembic
# (importing it and scanning the scripts cost ~0.3 s); a test keeps it equal to the
# scripts' head.
HEAD_REVISION = "0005"
BUSY_TIMEOUT_S = 120.0
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
_REBUILD_PREFIX = f".{INDEX}.rebuild-"
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def rebuild_path(folder: Path) -> Path:
    """A fresh name in ``folder`` for an index being rebuilt (published by a hard link)."""
    return folder / f"{_REBUILD_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def stale_rebuilds(root: Path) -> list[Path]:
    """Files of index rebuilds that were interrupted (or are running right now)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(_REBUILD_PREFIX))


def listed_ids(root: Path) -> set[str]:
    """The entry ids that the zoo's ``manifest.json`` lists (none if it is absent or unreadable).

    Objects listed there are the zoo's data even when the index lacks them, so
    no repair may treat them as garbage.
    """
    path = root / MANIFEST
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            return set()
        data = loads_json(path.read_bytes(), what=f"`{path}`")
    except (OSError, CanonError):
        return set()
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return set()
    return {
        e["id"]
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("id"), str) and _SHA_RE.fullmatch(e["id"])
    }


def object_count(root: Path) -> int:
    """How many objects the zoo folder ``root`` holds (0 where it has no ``objects/``)."""
    from canon.zoo._objects import ObjectStore

    return sum(1 for _ in ObjectStore(root / OBJECTS).iter())


def check_folder(root: Path) -> None:
    """Refuse a zoo path that is a file, or whose index or objects are not what they should be."""
    if root.exists() and not root.is_dir():
        raise CorruptZooError(f"`{root}` is a file, not a zoo folder; choose another --zoo path")
    index, objects = root / INDEX, root / OBJECTS
    if index.exists() and not index.is_file():
        raise CorruptZooError(
            f"the zoo index `{index}` is not a regular file; move it aside (canon rebuilds the "
            f"index from {MANIFEST} when there is one)"
        )
    if objects.exists() and not objects.is_dir():
        raise CorruptZooError(f"`{objects}` is not a folder; a zoo keeps its objects there")


def is_writable(root: Path) -> bool:
    """Whether this process may write the zoo's folder (and its index, when there is one)."""
    index = root / INDEX
    return os.access(root, os.W_OK | os.X_OK) and (not index.exists() or os.access(index, os.W_OK))


def index_error(index: Path, exc: BaseException) -> ZooError:
    """The zoo error to raise for a SQLite error ``exc`` met on the index at ``index``."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
    if "readonly" in text or "read-only" in text:
        return ReadOnlyZooError(
            f"the zoo `{index.parent}` is read-only here ({text}); "
            "reading works, writing needs write access to the folder"
        )
    if "locked" in text or "busy" in text:
        return ZooError(f"the zoo index `{index}` is busy ({text}); try again")
    if "constraint failed" in text:
        # A sound index refusing a write: another process removed or changed what it refers to.
        return ZooError(
            f"the zoo `{index.parent}` changed while this ran (another process removed or "
            f"changed an entry it used: {text}); this step was not saved, run it again"
        )
    manifest = index.parent / MANIFEST
    fix = (
        f"move it aside and canon rebuilds it from {MANIFEST}"
        if manifest.is_file()
        else "restore it from a backup"
    )
    return CorruptZooError(f"the zoo index `{index}` cannot be read ({text}); {fix}")


def read_connection(index: Path) -> sqlite3.Connection:
    """A read-only SQLite connection to the index.

    An index in WAL mode needs its ``-shm`` file to be read; on read-only
    storage where that file cannot be made, the index opens as immutable (no
    writer can be at work where nothing can be written). Damage raises
    :func:`index_error`'s error.
    """
    uri = f"file:{quote(str(index))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError:
            con.close()
            wal = index.with_name(index.name + "-wal")
            if is_writable(index.parent) or (wal.exists() and wal.stat().st_size > 0):
                raise
        con = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=BUSY_TIMEOUT_S)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return con
    except sqlite3.Error as exc:
        raise index_error(index, exc) from None


def recorded_revision(index: Path) -> str | None:
    """The revision in the index's ``alembic_version`` table (None if absent or unreadable)."""
    if not index.is_file():
        return None
    try:
        con = read_connection(index)
    except ZooError:
        return None
    try:
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return None if row is None else str(row[0])


def is_zoo(path: Path) -> bool:
    """Whether ``path`` holds a zoo: an index, or a manifest to rebuild one from."""
    return (path / INDEX).is_file() or (path / MANIFEST).is_file()

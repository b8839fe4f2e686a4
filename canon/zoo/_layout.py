"""A zoo folder's layout and its index's schema revision, known without SQLAlchemy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["HEAD_REVISION", "INDEX", "MANIFEST", "OBJECTS", "is_zoo", "recorded_revision"]

INDEX = "canon.sqlite"
OBJECTS = "objects"
MANIFEST = "manifest.json"

# The newest migration's id. An index already at this revision opens without Alembic
# (importing it and scanning the scripts cost ~0.3 s); a test keeps it equal to the
# scripts' head.
HEAD_REVISION = "0003"


def recorded_revision(index: Path) -> str | None:
    """The revision in the index's ``alembic_version`` table (None if absent or unreadable)."""
    if not index.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=30.0)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def is_zoo(path: Path) -> bool:
    """Whether ``path`` holds a zoo: an index, or a manifest to rebuild one from."""
    return (path / INDEX).is_file() or (path / MANIFEST).is_file()

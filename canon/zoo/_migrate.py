"""Finding the Alembic scripts and opening the index at the head revision.

Installed, the migrations are the package data ``canon.migrations``; in a
source checkout they are the repository's top-level ``migrations/`` folder.
"""

from __future__ import annotations

import importlib.resources
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError

from canon.errors import CorruptZooError
from canon.zoo._layout import (
    BUSY_TIMEOUT_S,
    HEAD_REVISION,
    index_error,
    read_connection,
    recorded_revision,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "alembic_config",
    "make_engine",
    "migrations_dir",
    "read_only_engine",
    "upgrade",
]


def migrations_dir() -> Path:
    """The folder of ``env.py`` and ``versions/``: ``canon.migrations``, else the checkout's."""
    try:
        found = Path(str(importlib.resources.files("canon.migrations")))
        if (found / "env.py").is_file():
            return found
    except (ModuleNotFoundError, TypeError):
        pass
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise CorruptZooError(
        "canon's database migrations are missing: neither the package `canon.migrations` nor "
        f"`{checkout}` exists; reinstall canon"
    )


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at canon's migrations (and at ``url`` when given)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def make_engine(path: Path, *, immediate: bool, foreign_keys: bool = True) -> Engine:
    """A SQLite engine on ``path``: WAL journal, busy timeout, optional ``BEGIN IMMEDIATE``.

    pysqlite's own transaction handling is switched off so that the ``begin``
    event decides how a transaction starts: writers take the write lock up
    front (``BEGIN IMMEDIATE``) and wait for it up to the busy timeout
    instead of failing halfway through.
    """
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT_S}, future=True
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        _to_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _to_wal(cur: Any) -> None:
    """Switch the file to WAL. On a file that several processes are creating at once the
    switch can fail as locked without waiting on the busy timeout (it needs the file to
    itself): it is tried again until the busy timeout has passed."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def read_only_engine(path: Path) -> Engine:
    """A SQLite engine that only reads the index at ``path`` (see :func:`read_connection`)."""
    return create_engine("sqlite://", creator=lambda: read_connection(path), future=True)


def head_revision() -> str:
    """The newest revision id of canon's migrations."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the index at ``engine`` is at (None for an empty file)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(path: Path, revision: str = "head") -> None:
    """Upgrade the index at ``path`` to ``revision`` (creating it when new).

    Runs in one ``BEGIN IMMEDIATE`` transaction with foreign keys off (SQLite
    batch migrations rebuild tables, which must not cascade), so concurrent
    openers wait and then find the work done.
    """
    if revision == "head" and recorded_revision(path) == HEAD_REVISION:
        return
    try:
        _upgrade(path, revision)
    except DBAPIError as exc:
        raise index_error(path, exc) from None


def _upgrade(path: Path, revision: str) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    engine = make_engine(path, immediate=True, foreign_keys=False)
    try:
        script = ScriptDirectory.from_config(alembic_config())
        current = current_revision(engine)
        known = {s.revision for s in script.walk_revisions()}
        if current is not None and current not in known:
            raise CorruptZooError(
                f"the zoo index `{path}` is at schema revision {current!r}, which this version "
                "of canon does not know (it was written by a newer canon); upgrade canon"
            )
        if revision == "head" and current == script.get_current_head():
            return
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()

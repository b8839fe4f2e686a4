"""Alembic environment of the zoo index.

canon runs migrations programmatically (``canon.zoo._migrate``) and hands an
open connection in ``config.attributes["connection"]``; a URL in the
config's ``sqlalchemy.url`` works too (for the ``alembic`` command line).
``render_as_batch=True`` lets SQLite alter tables by rebuilding them.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from canon.zoo._models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("canon's zoo migrations run online only")
run_migrations_online()

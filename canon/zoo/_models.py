"""SQLAlchemy models of the zoo index (private: rows never leave the store).

Every cached row carries the ids it depends on, with ``ON DELETE CASCADE``
so removing an entry removes what was derived from it. JSON columns hold
canonical JSON text (sorted keys, no spaces) written by the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "CanonicalCacheModel",
    "EntryModel",
    "FamilyMatchingModel",
    "FamilyModel",
    "JobModel",
    "PairCacheModel",
    "ParentModel",
    "RemoteModel",
    "TagModel",
]

# Named constraints, so Alembic's batch mode (SQLite table rebuilds) can address them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SHA = 64


def _entry_id(**options: Any) -> Mapped[str]:
    """A column holding an entry's id: removing the entry removes the row (``CASCADE``)."""
    return mapped_column(String(SHA), ForeignKey("entries.id", ondelete="CASCADE"), **options)


class Base(DeclarativeBase):
    """Declarative base holding the zoo's metadata."""

    metadata = MetaData(naming_convention=NAMING)


class FamilyModel(Base):
    """A family: entries of one architecture and config, aligned to one reference."""

    __tablename__ = "families"

    key: Mapped[str] = mapped_column(String(SHA), primary_key=True)
    architecture: Mapped[str] = mapped_column(String(256))
    config: Mapped[str] = mapped_column(Text)
    reference_id: Mapped[str | None] = mapped_column(
        String(SHA), ForeignKey("entries.id", ondelete="SET NULL")
    )


class FamilyMatchingModel(Base):
    """The matching method ``auto`` resolves to for a family (its architecture's default),
    recorded when a member is added or first compared, so that cached results are found
    without building the network; valid for the cache version it was recorded under."""

    __tablename__ = "family_matching"

    family: Mapped[str] = mapped_column(
        String(SHA), ForeignKey("families.key", ondelete="CASCADE"), primary_key=True
    )
    cache_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    method: Mapped[str] = mapped_column(String(64))


class EntryModel(Base):
    """One stored network; ``id`` is the sha256 of its object file."""

    __tablename__ = "entries"

    id: Mapped[str] = mapped_column(String(SHA), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    architecture: Mapped[str] = mapped_column(String(256))
    config: Mapped[str] = mapped_column(Text)
    family: Mapped[str] = mapped_column(String(SHA), index=True)
    dataset: Mapped[str | None] = mapped_column(String(256))
    kind: Mapped[str] = mapped_column(String(16))
    created: Mapped[datetime] = mapped_column(DateTime)
    metrics: Mapped[str] = mapped_column(Text)


class TagModel(Base):
    """A ``key=value`` tag of an entry (one value per key)."""

    __tablename__ = "tags"
    __table_args__ = (
        UniqueConstraint("entry_id", "key"),
        Index("ix_tags_key_value", "key", "value"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = _entry_id()
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(256))


class ParentModel(Base):
    """A parent link: ``child_id`` was made from ``parent_id`` (``position`` orders them)."""

    __tablename__ = "parents"

    child_id: Mapped[str] = _entry_id(primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[str] = mapped_column(String(SHA), ForeignKey("entries.id"), index=True)


class CanonicalCacheModel(Base):
    """The alignment (permutations and signs) of an entry to a reference."""

    __tablename__ = "canonical_cache"

    entry_id: Mapped[str] = _entry_id(primary_key=True)
    reference_id: Mapped[str] = _entry_id(primary_key=True)
    cache_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    alignment: Mapped[str] = mapped_column(Text)


class PairCacheModel(Base):
    """A pairwise result (distances, curves) keyed by everything it depends on."""

    __tablename__ = "pair_cache"

    entry_a: Mapped[str] = _entry_id(primary_key=True)
    entry_b: Mapped[str] = _entry_id(primary_key=True)
    path_kind: Mapped[str] = mapped_column(String(64), primary_key=True)
    options_hash: Mapped[str] = mapped_column(String(SHA), primary_key=True)
    cache_version: Mapped[int] = mapped_column(Integer, primary_key=True)
    result: Mapped[str] = mapped_column(Text)


class JobModel(Base):
    """A unit of long work (a comparison, a table, a midpoint) queued by the service.

    ``key`` identifies the request (kind and parameters); ``active_key`` holds
    it while the job is queued or running and is NULL afterwards, so the unique
    constraint lets at most one active job exist per request.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_created", "state", "created"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(SHA), index=True)
    active_key: Mapped[str | None] = mapped_column(String(SHA), unique=True)
    params: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    done: Mapped[int] = mapped_column(Integer)
    total: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    result: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(DateTime)
    started: Mapped[datetime | None] = mapped_column(DateTime)
    finished: Mapped[datetime | None] = mapped_column(DateTime)


class RemoteModel(Base):
    """What the zoo and a remote (a Hub repository's revision) last agreed on: the
    snapshot of entries and references (canonical JSON) at a commit, recorded by each
    push and pull; the base of the next one's three-way merge."""

    __tablename__ = "remotes"

    remote: Mapped[str] = mapped_column(String(512), primary_key=True)
    commit: Mapped[str | None] = mapped_column(String(64))
    snapshot: Mapped[str] = mapped_column(Text)
    synced: Mapped[datetime] = mapped_column(DateTime)

"""initial: entries, tags, parents, families, canonical_cache.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the first schema (no pair cache yet)."""
    op.create_table(
        "entries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("architecture", sa.String(256), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(256), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entries"),
        sa.UniqueConstraint("name", name="uq_entries_name"),
    )
    op.create_index("ix_entries_family", "entries", ["family"])
    op.create_table(
        "families",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("architecture", sa.String(256), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("reference_id", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["reference_id"],
            ["entries.id"],
            name="fk_families_reference_id_entries",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("key", name="pk_families"),
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["entries.id"], name="fk_tags_entry_id_entries", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tags"),
        sa.UniqueConstraint("entry_id", "key", name="uq_tags_entry_id_key"),
    )
    op.create_index("ix_tags_key_value", "tags", ["key", "value"])
    op.create_table(
        "parents",
        sa.Column("child_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["child_id"], ["entries.id"], name="fk_parents_child_id_entries", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["entries.id"], name="fk_parents_parent_id_entries"),
        sa.PrimaryKeyConstraint("child_id", "position", name="pk_parents"),
    )
    op.create_index("ix_parents_parent_id", "parents", ["parent_id"])
    op.create_table(
        "canonical_cache",
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("reference_id", sa.String(64), nullable=False),
        sa.Column("cache_version", sa.Integer(), nullable=False),
        sa.Column("alignment", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["entries.id"],
            name="fk_canonical_cache_entry_id_entries",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reference_id"],
            ["entries.id"],
            name="fk_canonical_cache_reference_id_entries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "entry_id", "reference_id", "cache_version", name="pk_canonical_cache"
        ),
    )


def downgrade() -> None:
    """Drop every table of the first schema."""
    for table in ("canonical_cache", "parents", "tags", "families", "entries"):
        op.drop_table(table)

"""pair_cache: cached pairwise results.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the pair cache table."""
    op.create_table(
        "pair_cache",
        sa.Column("entry_a", sa.String(64), nullable=False),
        sa.Column("entry_b", sa.String(64), nullable=False),
        sa.Column("path_kind", sa.String(64), nullable=False),
        sa.Column("options_hash", sa.String(64), nullable=False),
        sa.Column("cache_version", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_a"], ["entries.id"], name="fk_pair_cache_entry_a_entries", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["entry_b"], ["entries.id"], name="fk_pair_cache_entry_b_entries", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "entry_a",
            "entry_b",
            "path_kind",
            "options_hash",
            "cache_version",
            name="pk_pair_cache",
        ),
    )


def downgrade() -> None:
    """Drop the pair cache table."""
    op.drop_table("pair_cache")

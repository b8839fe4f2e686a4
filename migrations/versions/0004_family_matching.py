"""family_matching: the matching method ``auto`` resolves to, per family.

Recorded when an entry is added (and, for families of an older index, when a
comparison or table first resolves it), so that cached results answer without
building the network. Existing zoos start empty and fill on first need.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the family_matching table."""
    op.create_table(
        "family_matching",
        sa.Column("family", sa.String(64), nullable=False),
        sa.Column("cache_version", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["family"],
            ["families.key"],
            name="fk_family_matching_family_families",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("family", "cache_version", name="pk_family_matching"),
    )


def downgrade() -> None:
    """Drop the family_matching table."""
    op.drop_table("family_matching")

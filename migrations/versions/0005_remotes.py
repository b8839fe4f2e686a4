"""remotes: what the zoo and each Hub remote last agreed on (the base of a merge).

Recorded by every push and pull. Existing zoos start empty: their first sync with a
remote merges without a base (differences other than one-sided tags are conflicts).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the remotes table."""
    op.create_table(
        "remotes",
        sa.Column("remote", sa.String(512), nullable=False),
        sa.Column("commit", sa.String(64), nullable=True),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("synced", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("remote", name="pk_remotes"),
    )


def downgrade() -> None:
    """Drop the remotes table."""
    op.drop_table("remotes")

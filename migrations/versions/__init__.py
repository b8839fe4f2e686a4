"""Alembic revisions of the zoo index, oldest first."""

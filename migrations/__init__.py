"""Alembic migrations of the zoo index (installed as ``canon.migrations``)."""

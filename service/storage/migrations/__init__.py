"""Alembic migrations of the gallery schema, run programmatically by :func:`service.storage.engine.migrate`."""

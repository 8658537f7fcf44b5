"""Alembic environment: always run online on the connection handed over by the storage layer.

The storage layer passes its own connection in ``config.attributes["connection"]`` so the
migration uses the same engine configuration (SQLite pragmas, PostgreSQL search_path)
as the service, and no ``alembic.ini`` is needed at run time.
"""

from __future__ import annotations

from alembic import context

from service.storage.schema import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached through the alembic CLI
    raise RuntimeError("run migrations through service.storage.engine.migrate(engine)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE support on SQLite
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

"""Fresh databases for the gallery and API suites: SQLite in a temp dir, or a schema of its
own on the PostgreSQL server named by FACEGATE_TEST_POSTGRES_URL (CI starts one; the
server is shared between tests, so each gets a new schema, dropped afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ENV = "FACEGATE_TEST_POSTGRES_URL"


def with_pg_options(url: str, *options: str) -> str:
    """Add ``-c name=value`` server options (search_path, read-only...) to a psycopg URL."""
    u = sa.make_url(url)
    existing = u.query.get("options", "")
    if isinstance(existing, tuple):
        existing = " ".join(existing)
    opts = " ".join([existing, *options]).strip()
    return u.update_query_dict({"options": opts}).render_as_string(hide_password=False)


@contextmanager
def fresh_database(kind: str, tmp: Path, prefix: str = "t", sqlite_name: str = "facegate.db") -> Iterator[str]:
    """A database URL of ``kind`` ("sqlite" or "postgres") that no other test uses."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / sqlite_name}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is unset: PostgreSQL variant skipped (CI sets it)")
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base)
    with admin.begin() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_pg_options(base, f"-csearch_path={schema}")
    finally:
        with admin.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

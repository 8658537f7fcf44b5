"""Engine set-up, migrations and DB-error mapping: the SQL foundation the gallery and the key store share.

* SQLite: WAL (readers never block the writer), ``busy_timeout`` (writers queue instead
  of failing at once), ``foreign_keys=ON`` (cascades), all set per connection in a
  ``connect`` event. Transactions are begun explicitly (pysqlite's implicit BEGIN is
  turned off) so write transactions can start with ``BEGIN IMMEDIATE``: a deferred
  transaction that reads first and upgrades to a write later can fail with
  SQLITE_BUSY without waiting; IMMEDIATE takes the write lock up front and waits.
* PostgreSQL: the same code through psycopg 3; per-collection write ordering comes from
  the row lock on ``collections.revision``; migrations are serialised across replicas
  with an advisory lock.
* Any operational failure of the database (read-only, disk full, unreachable, locked
  past the busy timeout) becomes :class:`~service.errors.StorageUnavailable`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

from service.errors import Conflict, FacegateError, StorageUnavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: Execution option that makes a SQLite transaction begin with BEGIN IMMEDIATE.
WRITE_OPTION = "facegate_write"
#: Arbitrary constant key of the PostgreSQL advisory lock that serialises migrations.
_PG_MIGRATION_LOCK = 0x66616365  # "face"

#: PostgreSQL SQLSTATE classes that mean "the storage cannot serve us right now".
_PG_UNAVAILABLE_PREFIXES = ("08", "53", "57", "58", "25006", "40001", "40P01", "55P03", "HV")
#: SQLite messages meaning the same.
_SQLITE_UNAVAILABLE = (
    "readonly database",
    "read-only",
    "disk is full",
    "database or disk is full",
    "unable to open database",
    "database is locked",
    "disk i/o error",
)


def make_engine(
    url: str,
    *,
    sqlite_busy_timeout_ms: int = 10_000,
    sqlite_synchronous: str = "FULL",
    data_dir: Path | None = None,
) -> Engine:
    """Create the engine with the per-dialect connection setup described above."""
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database
        if db and db != ":memory:" and not db.startswith("file:"):
            private_file(Path(db).expanduser())
        engine = sa.create_engine(
            u,
            connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000},
            pool_pre_ping=False,
        )
        if sqlite_synchronous.upper() not in ("NORMAL", "FULL"):
            raise ValueError("sqlite_synchronous must be NORMAL or FULL")
        _install_sqlite_events(engine, sqlite_busy_timeout_ms, sqlite_synchronous.upper())
        return engine
    return sa.create_engine(u, pool_pre_ping=True, pool_size=10, max_overflow=10)


def private_dir(path: Path) -> Path:
    """Create (or tighten) a directory that holds biometric data: owner-only, 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def private_file(path: Path) -> None:
    """Make the SQLite database (crops, embeddings) owner-only before SQLite opens it:
    SQLite creates its -wal and -shm files with the database file's permissions."""
    if not path.parent.exists():
        private_dir(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists() and (p.stat().st_mode & 0o077):
            os.chmod(p, 0o600)


def _install_sqlite_events(engine: Engine, busy_timeout_ms: int, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module doc)
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.execute("PRAGMA foreign_keys=ON")
            # deleted crops/embeddings are zeroed, not left in free pages
            cur.execute("PRAGMA secure_delete=ON")
            try:
                mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    cur.execute("PRAGMA journal_mode=WAL")
            except Exception as e:  # noqa: BLE001 - a read-only file cannot switch modes; it still reads
                log.warning("sqlite: cannot enable WAL (%s)", e)
            # FULL (default): an acknowledged enroll survives power loss too; NORMAL in WAL
            # mode survives a process crash only. One fsync per commit is small next to
            # inference; tests use NORMAL.
            cur.execute(f"PRAGMA synchronous={synchronous}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def erase_deleted(engine: Engine) -> None:
    """SQLite: checkpoint the WAL into the database and truncate it, so rows just deleted
    (zeroed in place by ``secure_delete``) leave no older copy in the ``-wal`` file. Best
    effort: when readers keep the checkpoint from finishing, the next delete retries."""
    if engine.dialect.name != "sqlite":
        return
    try:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            busy = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            cur.close()
        finally:
            raw.close()
        if busy and busy[0]:
            log.info(
                "sqlite: WAL checkpoint after a delete was busy; deleted rows stay in the WAL until the next"
            )
    except Exception as e:  # noqa: BLE001 - the delete itself has committed
        log.warning("sqlite: WAL checkpoint after a delete failed (%s)", e)


def is_unavailable(err: BaseException) -> bool:
    """True if a DBAPI-level error means the storage is unavailable (not a bad request)."""
    if isinstance(err, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)):
        return True
    if isinstance(err, exc.DBAPIError):
        orig = err.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if sqlstate and str(sqlstate).startswith(_PG_UNAVAILABLE_PREFIXES):
            return True
        msg = str(orig).lower()
        if any(s in msg for s in _SQLITE_UNAVAILABLE):
            return True
        if err.connection_invalidated:
            return True
    return False


@contextlib.contextmanager
def mapped_errors(what: str = "gallery database") -> Iterator[None]:
    """Translate SQLAlchemy errors raised inside the block into typed service errors.

    Callers run their transaction inside the block, so by the time this handler runs
    the transaction has been rolled back: a failure never leaves a partial write.
    """
    try:
        yield
    except FacegateError:
        raise
    except exc.IntegrityError as e:
        raise Conflict("conflicting write", detail=str(e.orig).splitlines()[0][:300]) from e
    except exc.SQLAlchemyError as e:
        if is_unavailable(e):
            log.error("%s unavailable: %s", what, e)
            raise StorageUnavailable(detail=str(getattr(e, "orig", e)).splitlines()[0][:300]) from e
        raise
    except OSError as e:  # e.g. the data directory cannot be created
        raise StorageUnavailable(detail=str(e)[:300]) from e


def migrate(engine: Engine) -> None:
    """Bring the schema to ``head`` with alembic (the only place tables are created)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with mapped_errors("gallery migrations"), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_MIGRATION_LOCK})")
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                conn.rollback()
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_MIGRATION_LOCK})")
                conn.commit()

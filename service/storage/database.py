"""One database handle shared by the gallery and the key store: engines and transactions.

Every unit of work is one transaction (:meth:`Database.tx`): it commits on success and
rolls back on any error, which is then mapped to a typed service error
(:class:`~service.errors.StorageUnavailable`, :class:`~service.errors.Conflict`), so a
failure never leaves a partial write behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from service.storage.engine import (
    WRITE_OPTION,
    erase_deleted,
    make_engine,
    mapped_errors,
    migrate,
    private_dir,
)


class Database:
    """Opens (and migrates) the configured database once per process; thread-safe."""

    def __init__(self, settings: Any, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self._engine_arg = engine
        self._engine: Engine | None = None
        self._wengine: Engine | None = None

    def start(self) -> Database:
        """Connect and bring the schema to ``head``; idempotent."""
        if self._engine is not None:
            return self
        with mapped_errors():
            if getattr(self.settings, "data_dir", None) is not None:
                private_dir(self.settings.data_dir)  # database, snapshots, the first key: owner-only
            engine = self._engine_arg or make_engine(
                self.settings.resolved_database_url,
                sqlite_busy_timeout_ms=self.settings.sqlite_busy_timeout_ms,
                sqlite_synchronous=getattr(self.settings, "sqlite_synchronous", "FULL"),
            )
        migrate(engine)
        self._engine = engine
        self._wengine = engine.execution_options(**{WRITE_OPTION: True})
        return self

    def close(self) -> None:
        if self._engine is not None and self._engine_arg is None:
            self._engine.dispose()
        self._engine = self._wengine = None

    @property
    def started(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("Database.start() has not been called")
        return self._engine

    @contextmanager
    def tx(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction. ``write`` starts it with the write lock on SQLite (BEGIN
        IMMEDIATE), so a read-then-write transaction queues instead of failing busy."""
        if self._engine is None:
            raise RuntimeError("Database.start() has not been called")
        bind = self._wengine if write else self._engine
        with mapped_errors(), Session(bind=bind, expire_on_commit=False) as s, s.begin():
            yield s

    def erase_deleted(self) -> None:
        """Make deleted biometric rows unrecoverable from the SQLite WAL (see engine.py)."""
        erase_deleted(self.engine)

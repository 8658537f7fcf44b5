"""Per-key rate limits that hold across every worker process and replica of a deployment.

Each bucket (an API key) may make ``per_minute`` requests per calendar minute, counted in
the shared database (``rate_windows``). A request is decided in memory, never waiting for
the database: the process adds its own requests to the last shared count it read. A
background thread adds the process's new requests to the shared row and reads the total
back every ``sync_s`` seconds — one small write per active key per second and process,
whatever the traffic. So the deployment allows at most ``per_minute`` plus what the other
processes admitted since their last sync (``workers x rate x sync_s``), and a key refused
in one process is refused in all of them within ``sync_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.storage import Database
from service.storage.schema import RateWindowRow

log = logging.getLogger("facegate.auth")
WINDOW_S = 60


@dataclass
class _Bucket:
    window: int
    shared: int = 0  # the deployment's count at the last sync (this process included)
    unsynced: int = 0  # this process's requests not yet added to the shared row


class SharedLimiter:
    def __init__(self, db: Database, per_minute: int, *, sync_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.limit = int(per_minute)
        self.sync_s = sync_s
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SharedLimiter:
        if self.limit > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rate-sync", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sync()

    def take(self, key: str) -> float | None:
        """Count one request; None if allowed, else seconds until the window turns."""
        if self.limit <= 0:
            return None
        now = self.clock()
        window = int(now // WINDOW_S)
        with self._lock:
            b = self._buckets.get(key)
            if b is None or b.window != window:
                b = self._buckets[key] = _Bucket(window)
            if b.shared + b.unsynced >= self.limit:
                return (window + 1) * WINDOW_S - now
            b.unsynced += 1
        return None

    def sync(self) -> None:
        """Add this process's new requests to the shared rows and read the totals back."""
        with self._lock:
            pending = {k: (b.window, b.unsynced) for k, b in self._buckets.items()}
            for b in self._buckets.values():
                b.unsynced = 0
        if not pending:
            return
        try:
            totals = self._exchange(pending)
        except Exception:  # the database blinked: keep the counts for the next round
            log.warning("rate limits: shared counts unavailable, counting locally", exc_info=True)
            with self._lock:
                for k, (w, n) in pending.items():
                    b = self._buckets.get(k)
                    if b is not None and b.window == w:
                        b.unsynced += n
            return
        with self._lock:
            for k, (w, _) in pending.items():
                b = self._buckets.get(k)
                if b is not None and b.window == w:
                    b.shared = totals.get(k, b.shared)
            current = int(self.clock() // WINDOW_S)
            for k in [k for k, b in self._buckets.items() if b.window < current and not b.unsynced]:
                del self._buckets[k]

    def _exchange(self, pending: dict[str, tuple[int, int]]) -> dict[str, int]:
        t = RateWindowRow.__table__
        dialect = self.db.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        totals: dict[str, int] = {}
        with self.db.tx(write=True) as s:
            for key, (window, n) in pending.items():
                stmt = insert(t).values(bucket=key, window=window, n=n)
                stmt = stmt.on_conflict_do_update(index_elements=["bucket", "window"], set_={"n": t.c.n + n})
                s.execute(stmt)
                totals[key] = int(s.scalar(sa.select(t.c.n).where(t.c.bucket == key, t.c.window == window)))
            if pending:  # windows before the previous one are of no use any more
                oldest = min(w for w, _ in pending.values()) - 1
                s.execute(sa.delete(t).where(t.c.window < oldest))
        return totals

    def _run(self) -> None:
        while not self._stop.wait(self.sync_s):
            self.sync()

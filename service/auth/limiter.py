"""Per-key request rate limits (token buckets)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucketLimiter:
    """Token buckets in process memory: a burst of ``per_minute``, refilled at ``per_minute / 60``
    per second. Used where a per-process limit is the point (failed authentications per
    client address); per-key request limits are shared by all processes (``shared_limiter.py``).
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def _tokens(self, key: str, now: float) -> float:
        """The bucket's tokens now (lock held)."""
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.rate)

    def peek(self, key: str) -> float | None:
        """Like :meth:`take` without spending: None if a request would pass, else the wait."""
        if self.capacity <= 0:
            return None
        with self._lock:
            tokens = self._tokens(key, self.clock())
        return None if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def take(self, key: str) -> float | None:
        """Spend one token; None if allowed, else seconds until the next token."""
        if self.capacity <= 0:
            return None
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            spent = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if spent else tokens, now)
        return None if spent else (1.0 - tokens) / self.rate

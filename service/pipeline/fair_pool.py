"""A worker pool shared fairly by tenants: the decode -> detect -> align stage of every request.

Why not a ``ThreadPoolExecutor``: its one FIFO queue lets a single client that sends many
expensive images (progressive JPEGs, 32-image batches) push every other client's work
behind its own. Here each tenant (an API key) has its own queue, tenants are served
round-robin, and one tenant holds at most ``per_tenant`` workers at a time, so with
``workers > per_tenant`` another tenant's image always finds a free worker at once. The
pool size bounds the images decoded at once in the process, hence the memory they take.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class FairPool:
    def __init__(self, workers: int, per_tenant: int, name: str = "fair") -> None:
        if workers < 1 or per_tenant < 1:
            raise ValueError("workers and per_tenant must be >= 1")
        self.workers = workers
        self.per_tenant = min(per_tenant, workers)
        self._cond = threading.Condition()
        self._queues: dict[str, deque[tuple[Future, Callable[[], Any]]]] = {}
        self._turn: deque[str] = deque()  # tenants with queued work, in round-robin order
        self._running: Counter[str] = Counter()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, tenant: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future:
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            q = self._queues.setdefault(tenant, deque())
            q.append((fut, lambda: fn(*args, **kwargs)))
            if tenant not in self._turn:
                self._turn.append(tenant)
            self._cond.notify()
        return fut

    def queued(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def shutdown(self) -> None:
        """Stop taking work; queued tasks are cancelled, running ones finish."""
        with self._cond:
            self._closed = True
            for q in self._queues.values():
                for fut, _ in q:
                    fut.cancel()
            self._queues.clear()
            self._turn.clear()
            self._cond.notify_all()

    def _next(self) -> tuple[str, Future, Callable[[], Any]] | None:
        """The next task: the first tenant in turn that is under its share (lock held)."""
        for _ in range(len(self._turn)):
            tenant = self._turn[0]
            self._turn.rotate(-1)
            if self._running[tenant] < self.per_tenant:
                fut, task = self._queues[tenant].popleft()
                if not self._queues[tenant]:
                    del self._queues[tenant]
                    self._turn.remove(tenant)
                return tenant, fut, task
        return None

    def _work(self) -> None:
        while True:
            with self._cond:
                picked = self._next()
                while picked is None:
                    if self._closed:
                        return
                    self._cond.wait()
                    picked = self._next()
                tenant, fut, task = picked
                self._running[tenant] += 1
            try:
                if fut.set_running_or_notify_cancel():
                    try:
                        fut.set_result(task())
                    except BaseException as e:  # noqa: BLE001 - delivered to the caller
                        fut.set_exception(e)
            finally:
                with self._cond:
                    self._running[tenant] -= 1
                    if not self._running[tenant]:
                        del self._running[tenant]
                    self._cond.notify_all()

"""Cross-request micro-batching.

Concurrent requests each bring a few crops; one worker thread gathers them into a
single inference call of up to ``max_batch`` crops, waiting at most ``max_wait``
after the first one arrives. On a GPU this turns many batch-1 calls into one
batch-N call; on 2 CPU cores it mostly bounds contention. A failing batch fails
only the callers whose crops were in it.

Hand-written rather than taken from a serving framework (Triton, Ray Serve) because
those bring their own process model; this is one thread and one queue.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

log = logging.getLogger("facegate.batcher")

_STOP = object()


class MicroBatcher:
    def __init__(
        self,
        fn: Callable[[list[np.ndarray]], np.ndarray],
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        name: str = "embed",
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.fn = fn
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self.on_batch = on_batch
        self.runs = 0
        self.batch_sizes: Counter[int] = Counter()
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return self._q.qsize()

    def submit(self, crops: list[np.ndarray]) -> Future:
        """Future of the (len(crops), D) embeddings of these crops."""
        fut: Future = Future()
        if not crops:
            fut.set_result(None)
            return fut
        self._q.put((list(crops), fut))
        return fut

    def __call__(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.submit(crops).result()

    async def acall(self, crops: list[np.ndarray]) -> np.ndarray:
        return await asyncio.wrap_future(self.submit(crops))

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            pending = [item]
            count = len(item[0])
            deadline = time.perf_counter() + self.max_wait
            while count < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._q.put(_STOP)
                    break
                pending.append(nxt)
                count += len(nxt[0])
            self._run(pending)

    def _run(self, pending: list[tuple[list[np.ndarray], Future]]) -> None:
        crops = [c for cs, _ in pending for c in cs]
        self.runs += 1
        self.batch_sizes[len(crops)] += 1
        if self.on_batch:
            self.on_batch(len(crops))
        try:
            out = self.fn(crops)
        except BaseException as e:  # noqa: BLE001 - delivered to the callers, never kills the worker
            for _, fut in pending:
                if not fut.cancelled():
                    fut.set_exception(e)
            return
        i = 0
        for cs, fut in pending:
            if not fut.cancelled():
                fut.set_result(out[i : i + len(cs)])
            i += len(cs)

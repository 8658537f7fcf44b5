"""Micro-batching: fewer runs than callers, right results to the right caller, failures isolated."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.engine.batcher import MicroBatcher


class CountingFn:
    """Embeds a crop as its mean value (so each caller's answer is checkable), counting calls."""

    def __init__(self, delay: float = 0.01, poison: float | None = None) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.poison = poison
        self.lock = threading.Lock()

    def __call__(self, crops):
        with self.lock:
            self.calls.append(len(crops))
        time.sleep(self.delay)
        vals = np.array([[float(c.mean())] for c in crops], dtype=np.float32)
        if self.poison is not None and (vals == self.poison).any():
            raise RuntimeError("poisoned batch")
        return vals


def _crop(v: float) -> np.ndarray:
    return np.full((4, 4, 3), v, dtype=np.float32)


def test_concurrent_callers_share_runs() -> None:
    fn = CountingFn(delay=0.02)
    b = MicroBatcher(fn, max_batch=64, max_wait_ms=20)
    n = 24
    barrier = threading.Barrier(n)

    def call(i: int):
        barrier.wait()
        return b([_crop(i), _crop(i + 0.5)])

    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(call, range(n)))
    b.close()
    for i, r in enumerate(results):
        assert r.shape == (2, 1) and r[0, 0] == i and r[1, 0] == i + 0.5
    assert b.runs < n, f"{b.runs} runs for {n} callers"
    assert sum(fn.calls) == 2 * n
    assert max(fn.calls) > 2


def test_max_batch_respected() -> None:
    fn = CountingFn(delay=0.005)
    b = MicroBatcher(fn, max_batch=4, max_wait_ms=50)
    futs = [b.submit([_crop(i)]) for i in range(20)]
    assert [f.result()[0, 0] for f in futs] == list(range(20))
    b.close()
    assert max(fn.calls) <= 4


def test_failing_batch_fails_only_its_callers() -> None:
    fn = CountingFn(delay=0.0, poison=13.0)
    b = MicroBatcher(fn, max_batch=1, max_wait_ms=0)
    futs = {i: b.submit([_crop(i)]) for i in range(20)}
    for i, f in futs.items():
        if i == 13:
            with pytest.raises(RuntimeError, match="poisoned"):
                f.result()
        else:
            assert f.result()[0, 0] == i
    # The worker survives a failure.
    assert b([_crop(7)])[0, 0] == 7
    b.close()


def test_async_callers() -> None:
    import asyncio

    fn = CountingFn(delay=0.01)
    b = MicroBatcher(fn, max_batch=32, max_wait_ms=10)

    async def main():
        return await asyncio.gather(*(b.acall([_crop(i)]) for i in range(16)))

    out = asyncio.run(main())
    b.close()
    assert [o[0, 0] for o in out] == list(range(16))
    assert b.runs < 16

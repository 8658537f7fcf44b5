"""The decode pool is fair: one tenant's flood neither starves another tenant nor takes
more than its share of the workers, and errors reach the caller."""

from __future__ import annotations

import threading
import time

import pytest

from service.pipeline.fair_pool import FairPool


def test_a_flood_from_one_tenant_leaves_a_worker_for_another() -> None:
    pool = FairPool(workers=4, per_tenant=2, name="t")
    running = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    lock = threading.Lock()

    def job(tenant: str, seconds: float) -> float:
        with lock:
            running[tenant] += 1
            peak[tenant] = max(peak[tenant], running[tenant])
        time.sleep(seconds)
        with lock:
            running[tenant] -= 1
        return time.monotonic()

    try:
        flood = [pool.submit("a", job, "a", 0.2) for _ in range(12)]
        time.sleep(0.05)
        t0 = time.monotonic()
        started = pool.submit("b", lambda: time.monotonic())
        assert started.result(timeout=5) - t0 < 0.1  # not after the 12 x 0.2 s flood
        for f in flood:
            f.result(timeout=10)
        assert peak["a"] == 2  # never more than its share, though 2 more workers were idle
    finally:
        pool.shutdown()


def test_tenants_are_served_in_turn() -> None:
    pool = FairPool(workers=1, per_tenant=1, name="t")
    order: list[str] = []
    gate = threading.Event()
    try:
        first = pool.submit("x", gate.wait)  # holds the only worker while the queues fill
        futs = [pool.submit(t, order.append, t) for t in ("a", "a", "a", "b", "b", "c")]
        gate.set()
        first.result(timeout=5)
        for f in futs:
            f.result(timeout=5)
        assert order == ["a", "b", "c", "a", "b", "a"]
    finally:
        pool.shutdown()


def test_errors_reach_the_caller_and_shutdown_cancels_the_queue() -> None:
    pool = FairPool(workers=1, per_tenant=1, name="t")
    gate = threading.Event()
    boom = pool.submit("a", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        boom.result(timeout=5)
    blocker = pool.submit("a", gate.wait)
    queued = pool.submit("b", lambda: "never")
    time.sleep(0.05)
    pool.shutdown()
    gate.set()
    assert blocker.result(timeout=5) is True and queued.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit("a", lambda: None)

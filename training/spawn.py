"""Run a function on N local processes joined in a gloo process group: the multi-rank tests
and the Partial FC memory experiment use it (torchrun's job, without a command line).

``target(rank, world, port, *args, queue)`` runs in a fresh interpreter (spawn); it puts its
results on ``queue`` as plain Python values (a tensor would travel as a shared-memory handle
that dies with its process). :func:`run_ranks` returns what was put, in arrival order.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ranks(target: Callable[..., None], world: int, *args: Any, items: int | None = None,
              timeout: float = 180.0, stop: Callable[[Any], bool] | None = None,
              around_start: Callable[[], contextlib.AbstractContextManager] | None = None) -> list[Any]:
    """Start ``world`` processes, collect ``items`` results (default: one per rank), join them.
    ``stop(item)`` ends the collection early (a rank reporting an error); ``around_start``
    wraps the process starts (e.g. an allocator setting the children inherit)."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, queue)) for r in range(world)]
    with (around_start or contextlib.nullcontext)():
        for p in procs:
            p.start()
    got: list[Any] = []
    try:
        for _ in range(items if items is not None else world):
            got.append(queue.get(timeout=timeout))
            if stop is not None and stop(got[-1]):
                break
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return got


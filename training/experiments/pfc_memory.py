"""Per-rank classifier memory of Partial FC: one process (unsharded head) vs W gloo ranks
(:class:`~training.heads.sharded_fc.ShardedPartialFC`), same global batch, CPU.

``python -m training.experiments.pfc_memory --classes 200000 --dim 512 --world 2``

Per rank it reports the classifier's parameter + gradient bytes after one forward/backward
(exact) and the growth of the process's peak RSS during that step (the kernel's high-water
mark, reset just before it; includes the step's temporaries: normalised centres, logits and
their gradients). Prints a table and writes JSON.

The children run with a fixed glibc mmap threshold (:func:`exact_malloc`): by default glibc
raises the threshold up to 32 MiB after freeing a large block, after which freed blocks of
1–32 MiB (a shard's logit matrix) stay in the heap, and the peak RSS then measures the
allocator's retention rather than the tensors (measured: 0.60 of one rank instead of 0.52
at 200k × 128-d).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training.spawn import run_ranks

__all__ = ["exact_malloc", "measure", "step_memory"]


@contextmanager
def exact_malloc(threshold: int = 1 << 20) -> Iterator[None]:
    """Processes started inside inherit a fixed glibc mmap threshold: blocks above
    ``threshold`` bytes are mmapped and go back to the OS when freed."""
    key = "MALLOC_MMAP_THRESHOLD_"
    old = os.environ.get(key)
    os.environ[key] = str(threshold)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def step_memory(step: Callable[[], torch.nn.Module]) -> dict[str, int]:
    """Run ``step`` (builds a head, does one forward/backward, returns the head) and report
    its parameter and gradient bytes and the peak-RSS growth it caused (Linux only)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _peak_rss_kib()
    head = step()
    params = list(head.parameters())
    out = {
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "grad_bytes": sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
        "peak_rss_delta_bytes": (_peak_rss_kib() - before) * 1024,
    }
    del head, params
    gc.collect()
    return out


def _rank(rank: int, world: int, port: int, cfg: dict[str, Any], queue: Any) -> None:  # pragma: no cover
    import torch.distributed as dist

    from training.heads import build_head, build_sharded_head

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n = cfg["batch"]
    x = torch.randn(n, cfg["dim"], generator=g)
    y = torch.randint(0, cfg["classes"], (n,), generator=g)
    if world == 1:

        def step() -> torch.nn.Module:
            head = build_head("arcface", cfg["dim"], cfg["classes"], sample_rate=cfg["rate"]).train()
            F.cross_entropy(head(x, y), y).backward()
            return head

        queue.put((rank, step_memory(step)))
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        b = n // world
        mine = slice(rank * b, (rank + 1) * b)

        def step() -> torch.nn.Module:
            pfc = build_sharded_head("arcface", cfg["dim"], cfg["classes"], sample_rate=cfg["rate"]).train()
            pfc(x[mine], y[mine]).backward()
            return pfc

        queue.put((rank, step_memory(step)))
    finally:
        dist.destroy_process_group()


def measure(classes: int, dim: int, world: int, batch: int = 64, rate: float = 1.0) -> list[dict[str, int]]:
    """Per-rank memory of one step with ``world`` ranks (1 = plain head, no process group)."""
    if batch % world:
        raise ValueError("the global batch must split evenly over the ranks")
    cfg = {"classes": classes, "dim": dim, "batch": batch, "rate": rate}
    got = sorted(run_ranks(_rank, world, cfg, timeout=300, around_start=exact_malloc), key=lambda t: t[0])
    return [m for _, m in got]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="global batch")
    ap.add_argument("--rate", type=float, default=1.0, help="Partial FC sample rate")
    ap.add_argument("--out", type=Path, default=Path("runs/pfc_memory.json"))
    args = ap.parse_args(argv)
    mib = 2**20
    rows = []
    print(f"{args.classes} classes x {args.dim}-d fp32, global batch {args.batch}, sample rate {args.rate}")
    print("| ranks | rank | params MiB | grads MiB | peak RSS growth MiB | vs 1 rank |")
    print("|---|---|---|---|---|---|")
    base = None
    for world in sorted({1, args.world}):
        for rank, m in enumerate(measure(args.classes, args.dim, world, args.batch, args.rate)):
            base = base or m["peak_rss_delta_bytes"]
            rows.append({"world": world, "rank": rank, **m})
            print(
                f"| {world} | {rank} | {m['param_bytes'] / mib:.1f} | {m['grad_bytes'] / mib:.1f} | "
                f"{m['peak_rss_delta_bytes'] / mib:.1f} | {m['peak_rss_delta_bytes'] / base:.2f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"config": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

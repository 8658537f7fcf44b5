"""Training throughput: samples/s of one optimisation step (forward + ArcFace head + backward + SGD).

Not a test: a measurement to size training runs and to compare backbones on one machine.
On CPU it uses fp32; on CUDA, AMP (fp16 autocast + GradScaler) as in the arcface_torch recipe.
Synthetic input (random 112x112 images, random labels) so it measures compute, not data loading.

    python bench/train_throughput.py                       # mbf + r50, batch 32, ~1-2 min on 2 cores
    python bench/train_throughput.py --models mbf,r18,r50,r100 --batch 64 --steps 20

Timings on shared 2-core machines move by +-30 % from minute to minute (docs/facts.md): compare
backbones measured in one run, as ratios; the load average at start and end is recorded, and so
is process CPU time per step (with ``--threads 1`` on a busy machine, samples per CPU-second is
the better estimate of what the code does on idle cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table, rel
from training.backbones import count_params_flops, get_backbone
from training.heads import build_head

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_one(
    name: str,
    batch: int,
    num_classes: int,
    warmup: int,
    steps: int,
    budget_s: float,
    device: torch.device,
    amp: bool,
) -> dict[str, Any]:
    """Time ``steps`` training steps after ``warmup`` (stops early, after >= 2 steps, past ``budget_s``)."""
    torch.manual_seed(0)
    backbone = get_backbone(name, embedding_size=512)
    params, macs = count_params_flops(backbone)
    backbone = backbone.to(device).train()
    head = build_head("arcface", 512, num_classes, s=64.0, m=0.5).to(device).train()
    opt = torch.optim.SGD(
        [{"params": backbone.parameters()}, {"params": head.parameters()}],
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    x = torch.randn(batch, 3, 112, 112, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            emb = backbone(x)
        loss = F.cross_entropy(head(emb.float(), y), y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 5.0)  # as the recipe does: part of the cost
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    _sync(device)
    times: list[float] = []
    loss = float("nan")
    start = time.perf_counter()
    cpu_start = time.process_time()
    for i in range(steps):
        t0 = time.perf_counter()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if i >= 1 and time.perf_counter() - start > budget_s:
            break
    total = sum(times)
    cpu_total = time.process_time() - cpu_start
    times_sorted = sorted(times)
    return {
        "model": name,
        "params": params,
        "gmacs_per_image": round(macs / 1e9, 3),
        "batch": batch,
        "num_classes": num_classes,
        "amp": amp,
        "torch_threads": torch.get_num_threads(),
        "warmup_steps": warmup,
        "timed_steps": len(times),
        "seconds_per_step_mean": total / len(times),
        "seconds_per_step_median": times_sorted[len(times) // 2],
        "samples_per_s": batch * len(times) / total,
        "samples_per_s_best_step": batch / times_sorted[0],
        # Process CPU time: on a shared machine wall time includes waiting for the cores; with
        # one thread, samples per CPU-second is close to what an idle machine would give.
        "cpu_seconds_per_step": cpu_total / len(times),
        "samples_per_cpu_s": batch * len(times) / cpu_total if cpu_total > 0 else None,
        "final_loss": loss,
    }


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    return info


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def show(results: list[dict[str, Any]], info: dict[str, Any]) -> None:
    print_table(
        f"Training throughput ({info['device']}, torch {info['torch_version']}, {info['torch_threads']} threads)",
        ["model", "Mparams", "GMACs", "batch", "AMP", "steps", "s/step", "samples/s", "best step", "per CPU-s"],
        [[r["model"], f"{r['params'] / 1e6:.2f}", f"{r['gmacs_per_image']:.2f}", str(r["batch"]),
          "yes" if r["amp"] else "no", str(r["timed_steps"]), f"{r['seconds_per_step_mean']:.3f}",
          f"{r['samples_per_s']:.1f}", f"{r['samples_per_s_best_step']:.1f}",
          f"{r['samples_per_cpu_s']:.1f}" if r["samples_per_cpu_s"] else "-"] for r in results],
        width=max(100, shutil.get_terminal_size().columns),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mbf,r50", help="comma-separated backbone names (default: mbf,r50)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=1000, help="ArcFace head size")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 1 on CPU, 5 on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 5 on CPU, 30 on CUDA)")
    p.add_argument(
        "--budget", type=float, default=40.0, help="stop timing a model after this many seconds (>= 2 steps)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA too")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = device.type == "cuda" and not args.no_amp
    warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
    steps = args.steps if args.steps is not None else (30 if device.type == "cuda" else 5)

    info = machine_info(device)
    load_before = _load()
    started = dt.datetime.now(dt.timezone.utc)
    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        print(
            f"benchmarking {name} (batch {args.batch}, {warmup} warm-up + up to {steps} timed steps) ...",
            flush=True,
        )
        results.append(bench_one(name, args.batch, args.classes, warmup, steps, args.budget, device, amp))
    show(results, info)

    report = {
        "benchmark": "train_throughput",
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "step": "forward + ArcFace(s=64, m=0.5) head + cross-entropy + backward + grad-clip 5 + SGD(0.1, momentum 0.9, wd 5e-4)",
        "input": "synthetic 3x112x112, random labels",
        "machine": info,
        "load_avg_before": load_before,
        "load_avg_after": _load(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {rel(args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""End-to-end ``POST /v1/verify`` latency over HTTP vs the verify use case in process, as a ratio.

What is compared, for the same image pairs:

* **use case**: :func:`service.usecases.verify` called in process with the two photos,
  exactly what the API route calls (the two images decoded and detected side by side on
  the pipeline's pool, one embedding batch of two, the card's threshold): what a Python
  caller of the library pays.
* **HTTP**: a real ``facegate serve`` (uvicorn) on loopback with auth on, and an httpx
  client posting both images as multipart: parsing, auth, thread hops, JSON, TCP. The
  ratio is the pure cost of the service around the use case.

The two are measured interleaved, pair by pair (one in-process call, then one HTTP call,
with the server idle during the in-process call), because timings on small shared
machines drift by ±30 % from minute to minute: interleaving makes the ratio robust to
that drift. Target: HTTP p50 and p99 at most 1.2x the use case's. The run is bounded
by ``--budget`` seconds of measurement (default 45) plus server start-up: well under 2 min.

Usage::

    FACEGATE_TEST_DATA=../shared/data python bench/verify_latency.py [--budget 50] [--pairs 8]

Writes ``bench/results/verify_latency.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.common import rel
from devkit.server import Server

RESULTS = ROOT / "bench" / "results" / "verify_latency.json"
KEY = "bench-bootstrap-admin-key-0123456789"
TARGET = 1.2


def pick_pairs(faces_dir: Path, n: int) -> list[tuple[Path, Path, bool]]:
    """n pairs from pairs.csv, half same-person and half different, deterministic."""
    with open(faces_dir / "pairs.csv") as f:
        rows = list(csv.DictReader(f))
    same = [r for r in rows if r["same"] == "1"]
    diff = [r for r in rows if r["same"] == "0"]
    rng = np.random.default_rng(0)
    chosen = [same[i] for i in rng.choice(len(same), n // 2, replace=False)]
    chosen += [diff[i] for i in rng.choice(len(diff), n - n // 2, replace=False)]
    return [(faces_dir / r["a"], faces_dir / r["b"], r["same"] == "1") for r in chosen]


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--budget", type=float, default=45.0, help="Seconds of measurement (after warm-up).")
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    faces_dir = args.data / "faces"
    if not (faces_dir / "pairs.csv").is_file():
        print(f"no {faces_dir}/pairs.csv: set FACEGATE_TEST_DATA or --data", file=sys.stderr)
        return 2

    from service import usecases as uc
    from service.config import Settings
    from service.pipeline.pipeline import FacePipeline
    from service.pipeline.prepare import ImageInput

    pairs = pick_pairs(faces_dir, args.pairs)
    blobs = [(a.read_bytes(), b.read_bytes(), same) for a, b, same in pairs]
    settings = Settings(rate_limit_per_minute=0)
    pipeline = FacePipeline(settings)
    pipeline.load()

    def in_process(a: bytes, b: bytes) -> bool:
        """The verify use case itself: what the API route calls, minus HTTP."""
        return uc.verify(pipeline, None, uc.EVERYTHING, ImageInput(a), image2=ImageInput(b, "image2")).same

    tmp = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    t_start = time.monotonic()
    server = Server(tmp, {"FACEGATE_BOOTSTRAP_ADMIN_KEY": KEY, "FACEGATE_RATE_LIMIT_PER_MINUTE": "0",
                          "FACEGATE_WORKERS": "1"}).start(timeout=120)
    startup_s = time.monotonic() - t_start
    local_ms: list[float] = []
    http_ms: list[float] = []
    agree = 0
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as client:

            def over_http(a: bytes, b: bytes) -> bool:
                r = client.post("/v1/verify", files={"image": ("a.jpg", a, "image/jpeg"),
                                                      "image2": ("b.jpg", b, "image/jpeg")})
                r.raise_for_status()
                return r.json()["same"]

            for a, b, _ in blobs[:3]:  # warm-up both paths (allocators, ORT arenas, connection)
                in_process(a, b)
                over_http(a, b)
            deadline = time.monotonic() + args.budget
            rounds = 0
            while time.monotonic() < deadline and rounds < args.max_rounds:
                for a, b, same in blobs:
                    t0 = time.perf_counter()
                    d_local = in_process(a, b)
                    t1 = time.perf_counter()
                    d_http = over_http(a, b)
                    t2 = time.perf_counter()
                    local_ms.append((t1 - t0) * 1000)
                    http_ms.append((t2 - t1) * 1000)
                    agree += int(d_local == d_http == same)
                rounds += 1
    finally:
        server.stop()
        pipeline.close()

    loc, web = stats(local_ms), stats(http_ms)
    ratio = {k: web[k] / loc[k] for k in ("p50", "p90", "p99", "mean")}
    ok = ratio["p50"] <= TARGET and ratio["p99"] <= TARGET
    print(f"\n/v1/verify end-to-end vs the verify use case in process — {loc['n']} calls each over {len(blobs)} pairs, "
          f"{os.cpu_count()} CPUs, server start {startup_s:.1f} s\n")
    print(f"{'':18}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    print(f"{'use case':18}{loc['p50']:>10.1f}{loc['p90']:>10.1f}{loc['p99']:>10.1f}{loc['mean']:>10.1f}")
    print(f"{'HTTP /v1/verify':18}{web['p50']:>10.1f}{web['p90']:>10.1f}{web['p99']:>10.1f}{web['mean']:>10.1f}")
    print(f"{'ratio HTTP/case':18}{ratio['p50']:>10.2f}{ratio['p90']:>10.2f}{ratio['p99']:>10.2f}{ratio['mean']:>10.2f}")
    print(f"\ntarget ratio <= {TARGET} at p50 and p99: {'PASS' if ok else 'FAIL'}; "
          f"decisions matching ground truth on both paths: {agree}/{loc['n']}")
    result = {
        "benchmark": "verify_latency",
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "models": {"detector": settings.detector, "recognizer": settings.recognizer},
        "pairs": [[str(a.relative_to(faces_dir)), str(b.relative_to(faces_dir)), s] for a, b, s in pairs],
        "use_case_ms": loc,
        "http_ms": web,
        "ratio": ratio,
        "target_ratio": TARGET,
        "pass": ok,
        "server_startup_s": startup_s,
        "decisions_correct": agree,
        "method": "interleaved pair by pair (the verify use case in process, then HTTP); HTTP = real uvicorn on "
                  "loopback, auth on, multipart, httpx keep-alive",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {rel(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

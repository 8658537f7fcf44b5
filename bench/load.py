"""Load and soak: a real ``facegate serve`` on loopback, N concurrent clients mixing
verify, identify and enroll on the shared photos for a bounded time.

Reports per-route throughput and p50/p95/p99 latency, errors (must be 0), the server
process's RSS after warm-up and at the end (growth must stay under 10 %), and the
recognizer's micro-batch size histogram scraped from ``/metrics``.

    python bench/load.py                       # 32 clients, 60 s
    python bench/load.py --clients 8 --duration 10 --machine ci
    python bench/load.py --url http://host:8000 --key ADMINKEY   # an already running server

The photos come from $FACEGATE_TEST_DATA/faces (``--data``). Writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_result
from devkit.load import ADMIN_KEY, RSS_GROWTH_LIMIT, parse_mix, run_load, server_env, table
from devkit.server import Server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of measured load (after warm-up)")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds at full concurrency before RSS is sampled")
    ap.add_argument("--mix", type=parse_mix, default=parse_mix("verify=0.45,identify=0.45,enroll=0.10"))
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")))
    ap.add_argument("--url", help="an already running server (default: start one on loopback)")
    ap.add_argument("--key", default=ADMIN_KEY, help="admin key for --url")
    ap.add_argument("--machine", default=socket.gethostname())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="load", help="result file name under bench/results/")
    ap.add_argument("--server-env", action="append", default=[], metavar="K=V",
                    help="extra environment for the server, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    args = ap.parse_args(argv)
    faces = args.data / "faces"

    tmp = Path(tempfile.mkdtemp(prefix="facegate-load-"))
    server = None
    try:
        if args.url:
            url, rss = args.url, None
        else:
            server = Server(tmp / "data", server_env(dict(kv.split("=", 1) for kv in args.server_env))).start()
            url, rss = server.url, server.rss
        res = run_load(url, args.key, faces, clients=args.clients, duration=args.duration, mix=args.mix, rss=rss,
                       seed=args.seed, warmup=args.warmup)
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine_name"] = args.machine
    res["pass"] = {"errors_zero": res["errors"] == 0,
                   "rss_growth_under_10pct": res.get("rss_growth", 0.0) < RSS_GROWTH_LIMIT}
    print(table(res, args.machine))
    print("wrote", write_result(args.name, res))
    return 0 if all(res["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

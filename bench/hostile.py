"""Hostile uploads against a real server: memory of one big call, and fairness under a flood.

1. **Memory**: one ``/v1/embed`` call with 32 PNGs that are 40 MP each on decode (a face in
   the middle of a 6300 x 6300 transparent canvas: a few hundred KB on the wire). Peak
   resident memory of the server above idle (its VmHWM, reset before the call). Target:
   <= 1.5 GB (the first version: about 58 GB, extrapolated from 1.8 GB per image).
2. **Flood**: a victim key's ``/v1/verify`` latency on normal photos, idle and while 4
   clients of another key send the costliest progressive JPEG the decoder accepts (40 MP
   of noise with a repeated refinement scan) to ``/v1/detect`` in a loop. Target: victim
   p99 within 3x of idle.

    python bench/hostile.py [--data ../shared/data] [--attackers 4] [--probes 15]

Writes bench/results/hostile.json and prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_result
from devkit.hostile import face_on_transparent_canvas, flood, noise_progressive_jpeg, upload_memory
from devkit.server import Server

KEY = "bench-hostile-admin-key-0123456789"
MEMORY_TARGET_MIB = 1536
FLOOD_TARGET = 3.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")))
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--attackers", type=int, default=4)
    ap.add_argument("--probes", type=int, default=15)
    ap.add_argument("--name", default="hostile")
    args = ap.parse_args(argv)
    faces = args.data / "faces"
    face = cv2.imread(str(faces / "obama" / "1.jpg"))
    png = face_on_transparent_canvas(face)
    jpeg = noise_progressive_jpeg()
    normal = ((faces / "obama" / "1.jpg").read_bytes(), (faces / "obama" / "2.jpg").read_bytes())
    env = {"FACEGATE_BOOTSTRAP_ADMIN_KEY": KEY, "FACEGATE_RATE_LIMIT_PER_MINUTE": "0",
           "FACEGATE_MAX_REQUEST_BYTES": str(64 * 2**20)}
    with tempfile.TemporaryDirectory(prefix="facegate-hostile-") as tmp, Server(Path(tmp) / "data", env) as server:
        mem = upload_memory(server.url, KEY, server.pid, [png] * args.images, server.rss)
        fl = flood(server.url, KEY, jpeg, normal, attackers=args.attackers, probes=args.probes)
    res = {"memory": {**mem, "png_kib": round(len(png) / 1024, 1), "target_mib": MEMORY_TARGET_MIB,
                      "pass": mem["peak_above_idle_mib"] <= MEMORY_TARGET_MIB and mem["status"] == 200},
           "flood": {**fl, "jpeg_mib": round(len(jpeg) / 2**20, 2), "target_ratio_p99": FLOOD_TARGET,
                     "pass": fl["ratio_p99"] <= FLOOD_TARGET}}
    m, f = res["memory"], res["flood"]
    print(f"\nmemory: {m['images']} x {m['png_kib']} KiB PNG (40 MP each) in one /v1/embed: status {m['status']}, "
          f"{m['faces']} faces, peak {m['peak_above_idle_mib']} MiB above idle ({m['idle_rss_mib']} MiB), "
          f"{m['seconds']} s -> {'PASS' if m['pass'] else 'FAIL'} (<= {MEMORY_TARGET_MIB} MiB)")
    print(f"flood: {f['attackers']} clients x {f['jpeg_mib']} MiB progressive JPEG, "
          f"{f['attack']['requests']} hostile requests {f['attack']['statuses']}")
    print(f"{'victim /v1/verify':22}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'idle':22}{f['idle_ms']['p50']:>10.0f}{f['idle_ms']['p99']:>10.0f}")
    print(f"{'during the flood':22}{f['flood_ms']['p50']:>10.0f}{f['flood_ms']['p99']:>10.0f}")
    print(f"{'ratio':22}{f['ratio_p50']:>10.2f}{f['ratio_p99']:>10.2f}  -> {'PASS' if f['pass'] else 'FAIL'} "
          f"(p99 <= {FLOOD_TARGET}x)")
    print("wrote", write_result(args.name, res))
    return 0 if m["pass"] and f["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

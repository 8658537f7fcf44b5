"""The mixed load generator behind ``bench/load.py`` and the suite's short load test.

N concurrent clients mix verify, identify and enroll against a server; per-route
throughput and latency percentiles, errors, the server's RSS and the micro-batch sizes
scraped from ``/metrics`` come back as one dict.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
COLL = "load"
#: enrolled at setup (first photo); their other photos are the verify/identify probes
PEOPLE = ["alex_lacamoire", "biden", "deepface_p10", "deepface_p11", "deepface_p12", "deepface_p13",
          "kit_harington", "obama", "rose_leslie"]
RSS_GROWTH_LIMIT = 0.10


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What the benchmark servers run with: a known admin key, no rate limit, CPU index."""
    return {"FACEGATE_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY, "FACEGATE_RATE_LIMIT_PER_MINUTE": "0",
            "FACEGATE_INDEX_USE_GPU": "false", **(extra or {})}


# --- workload -----------------------------------------------------------------------------------------
def photos_of(faces_dir: Path, who: str) -> list[Path]:
    return sorted(p for p in (faces_dir / who).iterdir() if p.suffix in (".jpg", ".png"))


def setup_gallery(url: str, key: str, faces_dir: Path, enroll_targets: int = 8, people: list[str] = PEOPLE) -> dict:
    """Collection ``load`` with every person enrolled from their first photo, plus empty
    identities that the enroll traffic fills. Returns ids for the workload."""
    h = {"X-API-Key": key}
    with httpx.Client(base_url=url, headers=h, timeout=120) as c:
        r = c.post("/v1/collections", json={"id": COLL, "name": "load test"})
        assert r.status_code in (201, 409), r.text
        ids = {}
        for who in people:
            r = c.post(f"/v1/collections/{COLL}/identities", json={"external_id": who})
            if r.status_code == 409:
                continue
            ids[who] = r.json()["id"]
            p = photos_of(faces_dir, who)[0]
            r = c.post(f"/v1/collections/{COLL}/identities/{ids[who]}/faces",
                       files=[("image", (p.name, p.read_bytes(), "image/jpeg"))])
            assert r.status_code == 201, r.text
        targets = []
        for i in range(enroll_targets):
            r = c.post(f"/v1/collections/{COLL}/identities", json={"external_id": f"enroll-target-{i}-{time.time()}"})
            assert r.status_code == 201, r.text
            targets.append(r.json()["id"])
    return {"people": ids, "targets": targets, "enrolled": list(people)}


class Workload:
    """The request mix: each call returns (route, method, path, request kwargs, expected status)."""

    def __init__(self, faces_dir: Path, ids: dict, mix: dict[str, float], seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.mix = mix
        self.ids = ids
        self.people = [w for w in ids.get("enrolled", PEOPLE) if len(photos_of(faces_dir, w)) >= 2]
        self.probe = {w: [p.read_bytes() for p in photos_of(faces_dir, w)[1:]] for w in self.people}
        self.first = {w: photos_of(faces_dir, w)[0].read_bytes() for w in self.people}
        self.enroll_photos = [(w, b) for w in self.people for b in [self.first[w], *self.probe[w]]]

    def next(self) -> tuple[str, str, str, dict, int]:
        route = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        who = self.rng.choice(self.people)
        probe = self.rng.choice(self.probe[who])
        if route == "verify":
            other = who if self.rng.random() < 0.5 else self.rng.choice(self.people)
            files = [("image", ("a.jpg", probe, "image/jpeg")), ("image2", ("b.jpg", self.first[other], "image/jpeg"))]
            return route, "POST", "/v1/verify", {"files": files}, 200
        if route == "identify":
            return route, "POST", "/v1/identify", {"files": [("image", ("a.jpg", probe, "image/jpeg"))],
                                                   "data": {"collection_id": COLL, "top_k": "5"}}, 200
        target = self.rng.choice(self.ids["targets"])
        _, photo = self.rng.choice(self.enroll_photos)
        return route, "POST", f"/v1/collections/{COLL}/identities/{target}/faces", {
            "files": [("image", ("e.jpg", photo, "image/jpeg"))]}, 201


async def _client(url: str, key: str, work: Workload, deadline: float, out: list, errors: list) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=120) as c:
        while time.monotonic() < deadline:
            route, method, path, kw, expect = work.next()
            t0 = time.perf_counter()
            try:
                r = await c.request(method, path, **kw)
                status, text = r.status_code, r.text[:300]
            except httpx.HTTPError as e:
                status, text = 0, f"{type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
            out.append((route, dt, status))
            if status != expect:
                errors.append({"route": route, "status": status, "body": text})


def scrape_metrics(url: str, key: str) -> str:
    return httpx.get(url + "/metrics", headers={"X-API-Key": key}, timeout=30).text


def batch_histogram(metrics: str) -> dict[str, dict[str, float]]:
    """``facegate_embed_batch_size`` per model: cumulative bucket counts -> per-bucket counts."""
    per: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sums: dict[str, dict[str, float]] = defaultdict(dict)
    for line in metrics.splitlines():
        m = re.match(r'facegate_embed_batch_size_bucket\{le="([^"]+)",model="([^"]+)"\} (\S+)', line) or \
            re.match(r'facegate_embed_batch_size_bucket\{model="([^"]+)",le="([^"]+)"\} (\S+)', line)
        if m:
            a, b, v = m.groups()
            model, le = (b, a) if line.find("le=") < line.find("model=") else (a, b)
            per[model].append((float("inf") if le == "+Inf" else float(le), float(v)))
        m = re.match(r'facegate_embed_batch_size_(sum|count)\{model="([^"]+)"\} (\S+)', line)
        if m:
            sums[m.group(2)][m.group(1)] = float(m.group(3))
    out = {}
    for model, buckets in per.items():
        buckets.sort()
        hist, prev = {}, 0.0
        for le, cum in buckets:
            if cum - prev > 0:
                hist["<=" + (str(int(le)) if le != float("inf") else "inf")] = cum - prev
            prev = cum
        n = sums[model].get("count", 0.0)
        out[model] = {"batches": n, "mean_batch": round(sums[model].get("sum", 0.0) / n, 3) if n else 0.0,
                      "buckets": hist}
    return out


def summarise(samples: list, duration: float) -> dict:
    by: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, Counter] = defaultdict(Counter)
    for route, dt, status in samples:
        by[route].append(dt)
        statuses[route][status] += 1
    out = {}
    for route, lat in sorted(by.items()):
        a = np.asarray(lat) * 1000
        out[route] = {"requests": len(a), "throughput_rps": round(len(a) / duration, 2),
                      "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
                      "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1),
                      "statuses": {str(k): v for k, v in statuses[route].items()}}
    return out


def run_load(url: str, key: str, faces_dir: Path, *, clients: int, duration: float, mix: dict[str, float],
             rss: callable | None = None, seed: int = 0, warmup: float = 3.0, people: int = len(PEOPLE),
             enroll_targets: int = 8) -> dict:
    """Set up the gallery, warm up, run ``clients`` concurrent clients for ``duration`` s."""
    ids = setup_gallery(url, key, faces_dir, enroll_targets, PEOPLE[:people])
    work = Workload(faces_dir, ids, mix, seed)

    async def phase(seconds: float, n: int) -> tuple[list, list]:
        samples: list = []
        errors: list = []
        deadline = time.monotonic() + seconds
        await asyncio.gather(*[_client(url, key, work, deadline, samples, errors) for _ in range(n)])
        return samples, errors

    # Warm up at full concurrency: every threadpool thread gets its malloc arena and every
    # lazy cache fills before the RSS baseline is taken.
    asyncio.run(phase(warmup, clients))
    rss_start = rss() if rss else None
    series: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample_rss() -> None:  # RSS every second: a leak climbs, a high-water mark plateaus
        while rss and not stop.wait(1.0):
            try:
                series.append((round(time.monotonic() - t0, 1), rss()))
            except OSError:
                return

    t0 = time.monotonic()
    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    samples, errors = asyncio.run(phase(duration, clients))
    elapsed = time.monotonic() - t0
    stop.set()
    sampler.join()
    rss_end = rss() if rss else None
    metrics = scrape_metrics(url, key)
    total = len(samples)
    result = {
        "clients": clients, "duration_s": round(elapsed, 1), "mix": mix, "requests": total,
        "throughput_rps": round(total / elapsed, 2), "errors": len(errors), "error_samples": errors[:10],
        "routes": summarise(samples, elapsed), "batch_histogram": batch_histogram(metrics),
    }
    if rss_start is not None:
        peak = max([rss_end, *(v for _, v in series)])
        half = [v for t, v in series if t >= elapsed / 2] or [rss_end]
        result.update(rss_start_mib=round(rss_start / 2**20, 1), rss_end_mib=round(rss_end / 2**20, 1),
                      rss_peak_mib=round(peak / 2**20, 1), rss_growth=round((rss_end - rss_start) / rss_start, 4),
                      rss_growth_second_half=round((rss_end - min(half)) / rss_start, 4),
                      rss_series_mib=[(t, round(v / 2**20, 1)) for t, v in series[:: max(1, len(series) // 60)]])
    return result


def table(res: dict, machine: str) -> str:
    lines = [f"machine {machine}: {res['clients']} clients, {res['duration_s']} s, {res['requests']} requests "
             f"({res['throughput_rps']} req/s), errors {res['errors']}"
             + (f", RSS {res['rss_start_mib']} -> {res['rss_end_mib']} MiB ({res['rss_growth'] * 100:+.1f} %, "
                f"peak {res['rss_peak_mib']}, second half {res['rss_growth_second_half'] * 100:+.1f} %)"
                if "rss_growth" in res else ""),
             "| route | requests | req/s | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|"]
    for route, r in res["routes"].items():
        lines.append(f"| {route} | {r['requests']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p95_ms']} | "
                     f"{r['p99_ms']} | {r['max_ms']} |")
    for model, h in res["batch_histogram"].items():
        lines.append(f"micro-batches ({model}): {int(h['batches'])}, mean size {h['mean_batch']}, "
                     + ", ".join(f"{k}: {int(v)}" for k, v in h["buckets"].items()))
    return "\n".join(lines)


def parse_mix(s: str) -> dict[str, float]:
    out = {}
    for part in s.split(","):
        k, v = part.split("=")
        assert k in ("verify", "identify", "enroll"), k
        out[k] = float(v)
    return out

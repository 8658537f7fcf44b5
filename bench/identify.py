"""Gallery search benchmark: index types x gallery sizes on face-shaped synthetic embeddings.

For every (dim, size) and index type: build time, memory, single-query p50/p99 search
latency (top-10) and recall@10 against exact search; IVF and HNSW are tuned (smallest
nprobe / efSearch reaching --target-recall). Prints a rich table and writes JSON.

Data: ``devkit.face_shaped`` - identities as clusters (a probe has cosine
~0.5-0.85 to its person's enrolled faces, strangers ~0 +- 0.06), 3 faces per identity,
10 % of the probes are strangers. Uniform random vectors would make every approximate
index look terrible and a few well-separated blobs would make IVF look perfect; this is
in between, like real embeddings (docs/facts.md). Recall@10 is strict: all 10 exact
neighbours, including the 7 nearest *strangers* after a person's own 3 faces, which is
harder than what identify needs; "top1" is the agreement of the nearest face's
identity with exact search, which is what identify's answer depends on.

    python bench/identify.py                       # 512-d, 10k/100k/1M, < 10 min on 2 cores
    python bench/identify.py --sizes 10k,100k --dims 512,128
    python bench/identify.py --sizes 1M --hnsw-max 1M   # HNSW at 1M: ~15-20 min build
    python bench/identify.py --sizes 100k --pq-min 100k # add IVF + 4-bit PQ fast-scan + exact re-rank

Timings on shared 2-core machines vary by +-30 % minute to minute: compare within a run.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import rel
from devkit.face_shaped import gallery as synth_gallery
from devkit.face_shaped import probes

K = 10
RESULTS = Path(__file__).resolve().parent / "results" / "identify.json"
SEARCH_THREADS = 1  # set from --search-threads


def parse_size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "km" else s) * mult)


def fmt_size(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def latency(index: faiss.Index, q: np.ndarray, params: Any, budget_s: float, max_n: int) -> dict[str, Any]:
    """Single-query latency over up to ``max_n`` queries or ``budget_s`` seconds, with the
    search thread count the service uses (``--search-threads``)."""
    faiss.omp_set_num_threads(SEARCH_THREADS) if SEARCH_THREADS > 0 else None
    times = []
    t_end = time.perf_counter() + budget_s
    for i in range(min(max_n, len(q))):
        t0 = time.perf_counter()
        index.search(q[i : i + 1], K, params=params) if params is not None else index.search(q[i : i + 1], K)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end and len(times) >= 20:
            break
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    ms = np.array(times) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "n_timed": len(ms),
    }


RELEVANT = 0.4  # neighbours at least this similar can change an identify decision


def quality(
    index: faiss.Index,
    q: np.ndarray,
    params: Any,
    gt: np.ndarray,
    gt_d: np.ndarray,
    owners: np.ndarray,
    genuine: np.ndarray,
) -> dict[str, float]:
    """recall@10 (strict), recall of the exact top-10 neighbours scoring >= RELEVANT, and
    top-1 identity agreement with exact search on probes of enrolled people."""
    _, got = index.search(q, K, params=params) if params is not None else index.search(q, K)
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, gt)]))
    hit = sum(len(set(a) & set(b[d >= RELEVANT])) for a, b, d in zip(got, gt, gt_d))
    relevant = int((gt_d >= RELEVANT).sum())
    top1 = float(np.mean(owners[np.maximum(got[genuine, 0], 0)] == owners[gt[genuine, 0]]))
    return {
        "recall_at_10": recall,
        "recall_relevant": hit / max(1, relevant),
        "top1_identity_agreement": top1,
    }


def run_one(dim: int, n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    print(f"\n== {dim}-d, {fmt_size(n)} faces ==", flush=True)
    t0 = time.perf_counter()
    centres, owners, xb = synth_gallery(n, dim, faces_per_identity=3, seed=n + dim)
    q, q_owner = probes(centres, args.queries, seed=7, impostor_fraction=0.1)
    genuine = q_owner >= 0
    del centres
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"data {time.perf_counter() - t0:.1f}s", flush=True)

    faiss.cvar.distance_compute_blas_threshold = 1  # batched ground truth via BLAS
    t0 = time.perf_counter()
    exact = faiss.IndexFlatIP(dim)
    exact.add(xb)
    gt_d, gt = exact.search(q, K)
    print(f"ground truth {time.perf_counter() - t0:.1f}s", flush=True)
    faiss.cvar.distance_compute_blas_threshold = 4  # what the service sets
    rows: list[dict[str, Any]] = []
    lat_q = q[: args.latency_queries]

    def record(
        name: str, index: faiss.Index, build_s: float, mem: int, params: Any = None, **extra: Any
    ) -> None:
        row = {"dim": dim, "size": n, "index": name, "build_s": build_s, "memory_mb": mem / 2**20, **extra}
        row.update(quality(index, q, params, gt, gt_d, owners, genuine))
        row.update(latency(index, lat_q, params, args.latency_budget, args.latency_queries))
        rows.append(row)
        print(
            f"{name:<28} build {build_s:7.1f}s  mem {row['memory_mb']:7.0f} MiB  "
            f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
            f"recall@10 {row['recall_at_10']:.4f}  rel {row['recall_relevant']:.4f}  "
            f"top1 {row['top1_identity_agreement']:.4f}",
            flush=True,
        )

    def build(make: Any) -> tuple[faiss.Index, float, int]:
        gc.collect()
        r0, t0 = rss_bytes(), time.perf_counter()
        index = make()
        if not index.is_trained:  # IVF: ~64 points per list; SQ8: value ranges from 100k
            nl = getattr(index, "nlist", None)
            sample_n = min(n, args.train_per_list * nl if nl else 100_000)
            rng = np.random.default_rng(0)
            index.train(xb if sample_n == n else xb[np.sort(rng.choice(n, sample_n, replace=False))])
        index.add(xb)
        return index, time.perf_counter() - t0, max(0, rss_bytes() - r0)

    # exact (the service's IndexFlatIP), fp16 and 8-bit scalar-quantised flat
    want = set(args.indexes.split(","))
    if "flat" in want:
        record("flat IP (exact)", exact, 0.0, n * dim * 4)
    del exact
    for key, name, qt in (
        ("fp16", "flat fp16 (SQfp16)", faiss.ScalarQuantizer.QT_fp16),
        ("sq8", "flat SQ8", faiss.ScalarQuantizer.QT_8bit),
    ):
        if n > args.sq_max or key not in want:
            continue
        index, bs, mem = build(lambda qt=qt: faiss.IndexScalarQuantizer(dim, qt, faiss.METRIC_INNER_PRODUCT))
        record(name, index, bs, mem)
        del index

    # IVF. nlist ~ 2 sqrt(n) (the service's auto rule). Variants: flat codes (what the
    # service runs), and 4-bit PQ fast-scan codes re-ranked exactly (RFlat), which scans
    # compressed lists ~4-8x faster so far more lists fit in the latency budget.
    nlist = max(1, min(int(args.nlist_factor * math.sqrt(n)), n // 39))

    def tune(index: faiss.Index, make_params: Any) -> tuple[int, list[dict[str, Any]]]:
        sweep = []
        for nprobe in [p for p in args.nprobe if p <= nlist] or [nlist]:
            qual = quality(index, q, make_params(nprobe), gt, gt_d, owners, genuine)
            sweep.append({"nprobe": nprobe, **qual})
            if qual["recall_at_10"] >= args.target_recall:
                break
        return sweep[-1]["nprobe"], sweep

    def make_ivf_flat() -> faiss.Index:
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.spherical = True
        ivf.cp.niter = 12
        return ivf

    index, bs, mem = build(make_ivf_flat) if "ivf" in want else (None, 0.0, 0)
    service_nprobe = max(1, min(nlist, max(12, int(math.ceil(args.service_nprobe_fraction * nlist)))))
    p = faiss.SearchParametersIVF(nprobe=service_nprobe)
    if index is not None:
        record(
            f"IVF{nlist},Flat nprobe={service_nprobe} (service)",
            index,
            bs,
            mem,
            p,
            nlist=nlist,
            nprobe=service_nprobe,
        )
        chosen, sweep = tune(index, lambda k: faiss.SearchParametersIVF(nprobe=k))
        if chosen != service_nprobe:
            record(
                f"IVF{nlist},Flat nprobe={chosen}",
                index,
                bs,
                mem,
                faiss.SearchParametersIVF(nprobe=chosen),
                nlist=nlist,
                nprobe=chosen,
                sweep=sweep,
            )
    del index

    if n >= args.pq_min and "pq" in want:
        m = dim // args.pq_dims_per_sub

        def make_pq() -> faiss.Index:
            idx = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
            ivf = faiss.extract_index_ivf(idx)
            ivf.cp.spherical = True
            ivf.cp.niter = 12
            return idx

        def pq_params(k: int) -> Any:
            return faiss.IndexRefineSearchParameters(
                k_factor=args.refine, base_index_params=faiss.SearchParametersIVF(nprobe=k)
            )

        index, bs, mem = build(make_pq)
        chosen, sweep = tune(index, pq_params)
        record(
            f"IVF{nlist},PQ{m}x4fs,RFlat nprobe={chosen}",
            index,
            bs,
            mem,
            pq_params(chosen),
            nlist=nlist,
            nprobe=chosen,
            refine_k_factor=args.refine,
            sweep=sweep,
        )
        del index

    # HNSW (flat storage), M from the settings default; efSearch tuned
    if n <= args.hnsw_max and "hnsw" in want:
        index, bs, mem = build(lambda: faiss.IndexHNSWFlat(dim, args.hnsw_m, faiss.METRIC_INNER_PRODUCT))
        chosen = None
        sweep = []
        for ef in args.ef:
            p = faiss.SearchParametersHNSW(efSearch=ef)
            qual = quality(index, q, p, gt, gt_d, owners, genuine)
            sweep.append({"efSearch": ef, **qual})
            if qual["recall_at_10"] >= args.target_recall:
                chosen = ef
                break
        chosen = chosen or sweep[-1]["efSearch"]
        record(
            f"HNSW{args.hnsw_m} ef={chosen}",
            index,
            bs,
            mem,
            faiss.SearchParametersHNSW(efSearch=chosen),
            M=args.hnsw_m,
            efSearch=chosen,
            sweep=sweep,
        )
        del index
    else:
        print(
            f"HNSW skipped at {fmt_size(n)} (build ~15-20 min on 2 cores; --hnsw-max to include)", flush=True
        )
    gc.collect()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10k,100k,1M", help="comma list, e.g. 10k,100k,1M")
    ap.add_argument("--dims", default="512", help="comma list of embedding sizes, e.g. 512,128")
    ap.add_argument("--queries", type=int, default=500, help="queries for recall")
    ap.add_argument("--latency-queries", type=int, default=300, help="max single queries timed per index")
    ap.add_argument(
        "--latency-budget", type=float, default=8.0, help="seconds of timing per index (min 20 q)"
    )
    ap.add_argument(
        "--nprobe",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[16, 32, 64, 128, 256],
    )
    ap.add_argument("--nlist-factor", type=float, default=2.0, help="nlist = factor * sqrt(n)")
    ap.add_argument(
        "--service-nprobe-fraction",
        type=float,
        default=0.1,
        help="the service's auto nprobe / nlist (min 12)",
    )
    ap.add_argument(
        "--pq-min",
        type=parse_size,
        default=parse_size("1000M"),
        help="smallest size for IVF-PQ4fs+refine (off by default: PQ training takes minutes on 2 cores)",
    )
    ap.add_argument(
        "--pq-dims-per-sub", type=int, default=2, help="PQ sub-vector length (2 -> PQ256 at 512-d)"
    )
    ap.add_argument("--refine", type=int, default=20, help="k_factor of the exact re-ranking after PQ")
    ap.add_argument("--train-per-list", type=int, default=64)
    ap.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[64, 128, 256, 512])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument(
        "--hnsw-max", type=parse_size, default=parse_size("100k"), help="largest size to build HNSW at"
    )
    ap.add_argument("--sq-max", type=parse_size, default=parse_size("1M"))
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--indexes", default="flat,fp16,sq8,ivf,pq,hnsw", help="subset to run")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--search-threads",
        type=int,
        default=1,
        help="OpenMP threads per timed search (service default index_search_threads=1; 0 = all cores)",
    )
    args = ap.parse_args()
    global SEARCH_THREADS
    SEARCH_THREADS = args.search_threads

    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for dim in [int(d) for d in args.dims.split(",")]:
        for n in [parse_size(s) for s in args.sizes.split(",")]:
            rows += run_one(dim, n, args)
    total = time.perf_counter() - t_start

    from rich.console import Console
    from rich.table import Table

    table = Table(
        width=160,
        title=f"gallery search, top-{K}, 1 query per call, {args.search_threads or os.cpu_count()} search thread(s)",
    )
    for col in (
        "dim",
        "faces",
        "index",
        "build s",
        "mem MiB",
        "p50 ms",
        "p99 ms",
        "recall@10",
        "rel≥0.4",
        "top-1 id",
    ):
        table.add_column(col, justify="left" if col == "index" else "right")
    for r in rows:
        table.add_row(
            str(r["dim"]),
            fmt_size(r["size"]),
            r["index"],
            f"{r['build_s']:.1f}",
            f"{r['memory_mb']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['recall_at_10']:.4f}",
            f"{r['recall_relevant']:.4f}",
            f"{r['top1_identity_agreement']:.4f}",
        )
    Console(width=160).print(table)
    print(f"total {total:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "search_threads": args.search_threads,
        "machine": platform.machine(),
        "load_avg_at_end": os.getloadavg(),
        "total_s": total,
        "k": K,
        "queries": args.queries,
        "target_recall": args.target_recall,
        "data": "devkit.face_shaped: 3 faces/identity, 10% stranger probes",
        "argv": [rel(a) for a in sys.argv[1:]],
    }
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {rel(args.out)}")


if __name__ == "__main__":
    main()

"""Recognizer throughput: the bare onnxruntime session vs our Embedder behind the micro-batcher.

Each row interleaves ``--rounds`` raw and service measurements and reports medians.
For batch size B, the raw row times ``session.run`` on a ready (B, 3, 112, 112)
tensor. The service row has B threads each submitting one aligned crop at a time
to the micro-batcher (max batch B), which groups them into runs and does the
preprocessing (colour order, normalisation, layout) the raw row skips — so it is
the throughput the API sees. Target: service >= 0.9 x raw at B = 32.

    python bench/embed.py [--seconds 4] [--batches 1 8 32]

Recognizers: the default pack, plus the shared SFace and MobileFaceNet when
FACEGATE_TEST_DATA is set.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import write_result
from service.cards import Registry
from service.config import REPO_MODELS_DIR, Settings
from service.engine.batcher import MicroBatcher
from service.engine.embedder import load_embedder


def registry() -> Registry:
    import shutil
    import tempfile

    from service.modelinspect import card_from_onnx

    root = Path(tempfile.mkdtemp(prefix="facegate-bench-"))
    for d in REPO_MODELS_DIR.iterdir():
        if (d / "model.json").is_file():
            shutil.copytree(d, root / d.name)
    reg = Registry(root)
    data = os.environ.get("FACEGATE_TEST_DATA")
    if data:
        m = Path(data) / "models"
        reg.save(card_from_onnx(m / "face_recognition_sface_2021dec_int8bq_clean.onnx", "sface-clean",
                                color="RGB", mean=0.0, std=1.0, family_hint="sface"))
        reg.save(card_from_onnx(m / "mobilefacenet_paddle_128d.onnx", "mbf-paddle",
                                color="BGR", mean=127.5, std=128.0, family_hint="paddle"))
    return reg


def crops(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    data = os.environ.get("FACEGATE_TEST_DATA")
    if data:
        import cv2

        paths = sorted((Path(data) / "lfw112").glob("*/*.jpg"))[:n]
        out = [cv2.imread(str(p)) for p in paths]
        if len(out) == n:
            return out
    return [rng.integers(0, 255, (112, 112, 3), dtype=np.uint8) for _ in range(n)]


def raw_rate(emb, batch: np.ndarray, seconds: float) -> float:
    sess, name = emb.loaded.session, emb.loaded.input_name
    sess.run(None, {name: batch})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {name: batch})
        n += len(batch)
    return n / (time.perf_counter() - t0)


def service_rate(emb, pool: list[np.ndarray], b: int, seconds: float) -> tuple[float, float]:
    batcher = MicroBatcher(emb.embed, max_batch=b, max_wait_ms=2.0)
    stop = time.perf_counter() + seconds
    counts = [0] * b

    def client(i: int) -> None:
        j = i
        while time.perf_counter() < stop:
            batcher([pool[j % len(pool)]])
            counts[i] += 1
            j += b

    batcher([pool[0]])
    threads = [threading.Thread(target=client, args=(i,)) for i in range(b)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    sizes = batcher.batch_sizes
    mean_batch = sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))
    batcher.close()
    return sum(counts) / elapsed, mean_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved raw/service rounds per row (median)")
    args = ap.parse_args()
    reg = registry()
    settings = Settings(models_dir=reg.models_dir)
    pool = crops(64)
    rows = []
    for card in reg.cards():
        if card.kind != "recognizer":
            continue
        emb = load_embedder(card, reg, settings)
        for b in args.batches:
            if emb.batch_mode == "single" and b > 1:
                continue
            x = emb.preprocess(pool[:b])
            # Interleaved rounds, medians: the machine's speed drifts within seconds.
            raws, svcs, means = [], [], []
            for _ in range(args.rounds):
                raws.append(raw_rate(emb, x, args.seconds / args.rounds))
                svc_r, mean_r = service_rate(emb, pool, b, args.seconds / args.rounds)
                svcs.append(svc_r)
                means.append(mean_r)
            raw, svc, mean_batch = float(np.median(raws)), float(np.median(svcs)), float(np.median(means))
            rows.append({"model": card.name, "batch": b, "batch_mode": emb.batch_mode, "raw_faces_per_s": raw,
                         "service_faces_per_s": svc, "ratio": svc / raw, "mean_micro_batch": mean_batch})
    t = Table(title="recognizer throughput (faces/s)")
    for col in ("model", "batch", "raw ORT", "embedder+batcher", "ratio", "mean batch"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["model"], str(r["batch"]), f"{r['raw_faces_per_s']:.1f}", f"{r['service_faces_per_s']:.1f}",
                  f"{r['ratio']:.2f}", f"{r['mean_micro_batch']:.1f}")
    Console().print(t)
    print("wrote", write_result("embed", {"seconds": args.seconds, "rounds": args.rounds, "rows": rows}))


if __name__ == "__main__":
    main()

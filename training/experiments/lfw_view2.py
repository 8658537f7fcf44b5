"""Full LFW View 2 (10 folds, 6,000 pairs) through the service's embedder, with and without flip.

    python -m training.experiments.lfw_view2 --onnx ../shared/data/models/face_recognition_sface_2021dec_int8bq_clean.onnx \
        --color RGB --mean 0 --std 1 --out runs/lfw_view2_sface.json
    python -m training.experiments.lfw_view2 --model <registered name>

The test suite evaluates 2 folds only (time budget); this is the full protocol run
whose numbers go into reports. Reference (docs/facts.md): shared SFace, no flip, 99.32 %.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from training.evaluate import evaluate_pair_file, onnx_file_embedder, public, service_embedder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--models-dir", type=Path)
    ap.add_argument("--color", default="RGB")
    ap.add_argument("--mean", type=float, default=127.5)
    ap.add_argument("--std", type=float, default=127.5)
    ap.add_argument(
        "--lfw", type=Path, default=Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")) / "lfw112"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    results = {}
    for flip in (False, True):
        if args.onnx:
            emb = onnx_file_embedder(args.onnx, args.color, args.mean, args.std, flip=flip)
        else:
            emb = service_embedder(args.model, args.models_dir, flip=flip)
        t = time.time()
        rep = public(evaluate_pair_file(args.lfw / "pairs.txt", emb, flip=flip))
        rep["seconds"] = time.time() - t
        results["flip" if flip else "no_flip"] = rep
        print(
            f"flip={flip}: accuracy {100 * rep['accuracy']:.2f} % +- {100 * rep['std']:.2f}, AUC {rep['auc']:.5f}, "
            f"TAR@FAR1e-3 {rep['tar_at_far']['1e-3']['tar']:.4f}, {rep['seconds']:.0f} s",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

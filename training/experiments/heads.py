"""Head-to-head: softmax vs CosFace vs ArcFace vs KappaFace under one budget, on LFW View 1.

    python -m training.experiments.heads --lfw ../shared/data/lfw112 --out runs/experiments/heads

Protocol
--------
* Training people: LFW View 1 ``peopleDevTrain.txt`` with at least ``--min-images``
  images (people-disjoint from View 1 test; View 2 shares people with View 1 train, so
  View 2 numbers here are reported for completeness and marked as such).
* Two data variants: as they are (LFW's own long tail), and a Zipf-cut variant where
  the r-th largest class keeps ~ ``--zipf-head / r`` images.
* Same budget for every head: same backbone (the tiny CNN of
  :mod:`training.experiments.tiny`, sized for 2 CPU cores), steps, batch, optimiser,
  schedule, seed and data order.
* Reported: View 1 test accuracy (1,000 pairs, 10 stratified folds, threshold from the
  other folds), View 2 10-fold accuracy (6,000 pairs), TAR at FAR 1e-2 / 1e-3, AUC.
* KappaFace's per-class margins after training are plotted against class size (PNG).

At this scale (minutes of CPU) the numbers rank heads on a toy budget; they are not
the heads' real accuracies, which need a large data set and a large backbone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import (
    DataConfig,
    DataSource,
    EvalConfig,
    HeadConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
)
from training.data.base import InMemory, Subset
from training.data.imagefolder import ImageFolderDataset
from training.data.lfw import read_people
from training.data.samplers import zipf_subset
from training.data.transforms import Augment
from training.evaluate import TorchEmbedder, evaluate_pair_set, load_pair_set
from training.experiments.tiny import TinyFaceNet
from training.train import Trainer

HEADS: dict[str, dict[str, Any]] = {
    "softmax": {},
    "cosface": {"s": 32.0, "m": 0.35},
    "arcface": {"s": 32.0, "m": 0.5},
    "kappaface": {"s": 32.0},
}


def cached(ps: Any) -> Any:
    """Decode each evaluation image once for all runs."""
    cache: dict[str, np.ndarray] = {}
    load = ps.load

    def get(key: str) -> np.ndarray:
        if key not in cache:
            cache[key] = load(key)
        return cache[key]

    ps.load = get
    return ps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="head-to-head margin-head experiment on LFW View 1")
    ap.add_argument(
        "--lfw", type=Path, default=Path(os.environ.get("FACEGATE_TEST_DATA", "../shared/data")) / "lfw112"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/heads"))
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--variants", default="natural,zipf")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--embedding", type=int, default=128)
    ap.add_argument("--min-images", type=int, default=3)
    ap.add_argument("--zipf-head", type=int, default=120)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest on a busy 2-core box")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flip", action="store_true", help="flip-test at evaluation (2x inference)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()

    people = read_people(args.lfw / "peopleDevTrain.txt")
    base = InMemory(ImageFolderDataset(args.lfw, people=people, min_images=args.min_images), progress=True)
    variants = {
        "natural": base,
        "zipf": Subset(base, zipf_subset(base.labels, args.zipf_head, 1.0, seed=args.seed)),
    }
    view1 = cached(load_pair_set(args.lfw / "pairsDevTest.txt"))
    view2 = cached(load_pair_set(args.lfw / "pairs.txt"))

    results: list[dict[str, Any]] = []
    margins: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for vname in args.variants.split(","):
        ds = variants[vname]
        ds.augment = Augment(flip=True)
        for hname in args.heads.split(","):
            steps_per_epoch = len(ds) // args.batch
            epochs = max(1, int(np.ceil(args.steps / steps_per_epoch)))
            cfg = TrainConfig(
                name=f"{vname}-{hname}",
                out_dir=args.out / f"{vname}-{hname}",
                seed=args.seed,
                epochs=epochs,
                max_steps=args.steps,
                batch_size=args.batch,
                threads=args.threads,
                log_every=10,
                data=DataConfig(sources=[DataSource(kind="synthetic")], num_workers=0),
                model=ModelConfig(backbone="tiny", embedding_size=args.embedding),
                head=HeadConfig(name=hname, hyper=HEADS[hname]),  # type: ignore[arg-type]
                optim=OptimConfig(
                    name="adamw",
                    lr=args.lr,
                    lr_batch=args.batch,
                    weight_decay=5e-4,
                    schedule="cosine",
                    warmup_epochs=0.1 * args.steps / steps_per_epoch,
                ),
                eval=EvalConfig(),
            )
            torch.manual_seed(args.seed)
            net = TinyFaceNet(args.embedding)
            t0 = time.time()
            res = Trainer(cfg, backbone=net, dataset=ds, progress=False).fit()
            t_train = time.time() - t0
            emb = TorchEmbedder(net, batch_size=256)
            r1 = evaluate_pair_set(view1, emb, flip=args.flip, progress=False)
            r2 = evaluate_pair_set(view2, emb, flip=args.flip, progress=False)
            row = {
                "variant": vname,
                "head": hname,
                "hyper": HEADS[hname],
                "images": len(ds),
                "identities": int(np.unique(ds.labels).size),
                "steps": res.steps,
                "loss_first10": float(np.mean(res.losses[:10])),
                "loss_last10": float(np.mean(res.losses[-10:])),
                "view1_acc": r1["accuracy"],
                "view1_auc": r1["auc"],
                "view2_acc": r2["accuracy"],
                "view2_std": r2["std"],
                "view2_auc": r2["auc"],
                "view2_tar_far1e-2": r2["tar_at_far"]["1e-2"]["tar"],
                "view2_tar_far1e-3": r2["tar_at_far"]["1e-3"]["tar"],
                "train_s": round(t_train, 1),
                "total_s": round(time.time() - t0, 1),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            if hname == "kappaface":
                m = None
                # margins live on the head: re-read them from the saved checkpoint
                st = torch.load(res.last_checkpoint, map_location="cpu", weights_only=False)
                for k, v in st["head"].items():
                    if k.endswith("margins"):
                        m = v.float().numpy()
                if m is not None:
                    margins[vname] = (np.bincount(ds.labels), m)
            (args.out / "results.json").write_text(json.dumps(results, indent=2))

    _write_table(results, args.out / "results.md", time.time() - t_all, args)
    if margins:
        _plot_margins(margins, args.out / "kappaface_margins.png")
    print(f"total {time.time() - t_all:.0f} s; results in {args.out}")


def _write_table(rows: list[dict[str, Any]], path: Path, seconds: float, args: argparse.Namespace) -> None:
    lines = [
        (
            f"Heads on LFW View 1 training people (>= {args.min_images} images), tiny CNN, {args.steps} steps x "
            f"batch {args.batch}, AdamW lr {args.lr}, flip-test {'on' if args.flip else 'off'}; "
            f"total {seconds / 60:.1f} min."
        ),
        "",
        (
            "| data | head | images / ids | loss first→last | View 1 test acc | View 2 acc (10-fold) | View 2 AUC | "
            "TAR@FAR1e-2 | TAR@FAR1e-3 |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['head']} | {r['images']} / {r['identities']} | {r['loss_first10']:.2f}→"
            f"{r['loss_last10']:.2f} | {100 * r['view1_acc']:.2f} % | {100 * r['view2_acc']:.2f} ± "
            f"{100 * r['view2_std']:.2f} % | {r['view2_auc']:.4f} | {r['view2_tar_far1e-2']:.4f} | "
            f"{r['view2_tar_far1e-3']:.4f} |"
        )
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _plot_margins(margins: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(margins), figsize=(5 * len(margins), 4), squeeze=False)
    for ax, (name, (counts, m)) in zip(axes[0], margins.items()):
        ax.scatter(counts[: len(m)], m[: len(counts)], s=8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("images in class (log)")
        ax.set_ylabel("KappaFace margin (rad)")
        ax.set_title(f"{name}: {len(counts)} classes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

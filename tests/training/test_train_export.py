"""CPU smoke run on real LFW View 1 training people + synthetic identities:
loss falls, checkpoint -> resume is exact, export -> ONNX parity, the service loads the model.

A smoke test, not a result: a few steps of a shrunken MobileFaceNet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.config import TrainConfig

STEPS = 8


def _cfg(lfw_dir: Path, out: Path, max_steps: int) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "name": "smoke",
            "out_dir": str(out),
            "seed": 3,
            "epochs": 3,
            "max_steps": max_steps,
            "batch_size": 16,
            "checkpoint_every": STEPS // 2,
            "threads": 1,
            "log_every": 2,
            "precise_bn_batches": 4,
            "data": {
                "num_workers": 0,
                "sources": [
                    {
                        "kind": "lfw",
                        "root": str(lfw_dir),
                        "view1_train": True,
                        "min_images": 15,
                        "max_people": 4,
                    },
                    {"kind": "synthetic", "num_classes": 8, "per_class": 6},
                ],
            },
            "model": {
                "backbone": "mbf",
                "embedding_size": 64,
                "backbone_kwargs": {"blocks": [1, 1, 1, 1], "scale": 1},
            },
            "head": {"name": "arcface", "hyper": {"s": 32.0, "m": 0.3}},
            "optim": {"name": "sgd", "lr": 0.05, "lr_batch": 16, "warmup_epochs": 0.05, "schedule": "cosine"},
        }
    )


@pytest.fixture(scope="module")
def runs(lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from training.train import train

    base = tmp_path_factory.mktemp("runs")
    full = train(_cfg(lfw_dir, base / "full", STEPS), progress=False)
    half = train(_cfg(lfw_dir, base / "resumed", STEPS // 2), progress=False)
    resumed = train(_cfg(lfw_dir, base / "resumed", STEPS), resume=base / "resumed", progress=False)
    return {"full": full, "half": half, "resumed": resumed, "base": base}


def test_loss_falls(runs: dict[str, Any]) -> None:
    losses = runs["full"].losses
    assert len(losses) == STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    summary = runs["full"].data_summary
    assert summary["identities"] == 12 and len(summary["parts"]) == 2
    assert (runs["full"].out_dir / "config.json").is_file()  # resolved config beside the checkpoints


def test_resume_continues_with_identical_state(runs: dict[str, Any]) -> None:
    full = torch.load(runs["full"].last_checkpoint, weights_only=False)
    res = torch.load(runs["resumed"].last_checkpoint, weights_only=False)
    assert res["global_step"] == full["global_step"] == STEPS
    assert runs["resumed"].losses == runs["full"].losses  # same batches, same updates, bit for bit
    for part in ("backbone", "head"):
        for k, v in full[part].items():
            assert torch.equal(v, res[part][k]), (part, k)
    assert full["scheduler"]["last_epoch"] == res["scheduler"]["last_epoch"]
    assert torch.equal(full["rng"]["torch"], res["rng"]["torch"])


def test_export_parity_card_and_service_load(runs: dict[str, Any], lfw_dir: Path) -> None:
    from service.cards import Registry
    from service.config import Settings
    from service.engine.embedder import load_embedder
    from training.evaluate import TorchEmbedder
    from training.export import export_model
    from training.train import load_backbone_from_checkpoint

    models = runs["base"] / "models"
    card = export_model(
        runs["full"].last_checkpoint,
        "smoke-mbf-arcface",
        models,
        lfw_dir / "pairsDevTest.txt",
        calib_max_pairs=80,
        progress=False,
    )
    parity = card["training"]["parity"]
    assert parity["passed"] and parity["rel_max_abs_diff"] < 1e-3 and parity["min_cosine_service"] > 0.9999
    assert (
        card["input"]["color"] == "RGB"
        and card["input"]["mean"] == 127.5
        and card["input"]["batch"] == "dynamic"
    )
    assert card["training"]["head"]["name"] == "arcface" and card["training"]["head"]["m"] == 0.3
    assert set(card["thresholds"]["far"]) == {"1e-2", "1e-3", "1e-4"}

    # no manual step: the service's registry + embedder load it from models/<name>/
    registry = Registry(models)
    loaded = registry.get("smoke-mbf-arcface")
    emb = load_embedder(loaded, registry, Settings(models_dir=models))
    import cv2

    a = cv2.imread(str(lfw_dir / "Abdullah_Gul/Abdullah_Gul_0013.jpg"))
    b = cv2.imread(str(lfw_dir / "Abdullah_Gul/Abdullah_Gul_0014.jpg"))
    c = cv2.imread(str(lfw_dir / "AJ_Lamas/AJ_Lamas_0001.jpg"))
    e = emb.embed([a, b, c])
    assert e.shape == (3, 64) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    same, diff = float(e[0] @ e[1]), float(e[0] @ e[2])
    ref = TorchEmbedder(load_backbone_from_checkpoint(runs["full"].last_checkpoint)[0]).embed([a, b, c])
    assert same == pytest.approx(float(ref[0] @ ref[1]), abs=1e-4)
    assert diff == pytest.approx(float(ref[0] @ ref[2]), abs=1e-4)
    assert diff < 0.99  # precise-BN: eval-mode embeddings of a short run do not collapse to one point
    thr, src = loaded.thresholds.for_far(1e-3)
    assert -1 <= thr <= 1 and src == "card FAR 1e-3" and "pairsDevTest" in loaded.thresholds.source
    print(f"smoke model: same-pair cosine {same:.3f}, different-pair cosine {diff:.3f}, threshold {thr:.3f}")


def test_fp16_export_parity(runs: dict[str, Any], lfw_dir: Path) -> None:
    """fp16 weights, fp32 input/output: looser tolerance, same service path."""
    pytest.importorskip("onnxconverter_common")
    from training.export import export_model

    card = export_model(
        runs["full"].last_checkpoint,
        "smoke-fp16",
        runs["base"] / "models",
        lfw_dir / "pairsDevTest.txt",
        calib_max_pairs=40,
        fp16=True,
        progress=False,
    )
    assert card["training"]["export"]["fp16"] and card["training"]["parity"]["min_cosine_service"] > 0.999

"""Mixed precision off the GPU: bf16 autocast on CPU runs the loop's AMP path in CI.

A few steps of a shrunken MobileFaceNet on synthetic identities: the convolutions really run
in bf16 (a forward hook sees it), the loss is finite and close to, but not equal to, the fp32
run's, the fp32 master weights move, and the checkpoint exports to an fp32 ONNX graph that
matches PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from training.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = 6


def _cfg(out: Path, amp_dtype: str) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "name": f"amp-{amp_dtype}",
            "out_dir": str(out),
            "seed": 1,
            "epochs": 2,
            "max_steps": STEPS,
            "batch_size": 8,
            "threads": 1,
            "device": "cpu",
            "amp": True,
            "amp_dtype": amp_dtype,
            "data": {"num_workers": 0, "sources": [{"kind": "synthetic", "num_classes": 8, "per_class": 6}]},
            "model": {
                "backbone": "mbf",
                "embedding_size": 32,
                "backbone_kwargs": {"blocks": [1, 1, 1, 1], "scale": 1},
            },
            "head": {"name": "arcface", "hyper": {"s": 16.0, "m": 0.3}},
            "optim": {"name": "sgd", "lr": 0.1, "lr_batch": 8, "schedule": "constant"},
        }
    )


def _run(out: Path, amp_dtype: str) -> dict[str, Any]:
    from training.backbones import get_backbone
    from training.train import Trainer

    cfg = _cfg(out, amp_dtype)
    torch.manual_seed(cfg.seed)  # same initial backbone for both runs
    net = get_backbone("mbf", embedding_size=32, blocks=[1, 1, 1, 1], scale=1)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[torch.dtype] = []
    first_conv.register_forward_hook(lambda _m, _i, o: seen.append(o.dtype))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = Trainer(cfg, progress=False, backbone=net)
    res = trainer.fit()
    return {"res": res, "seen": seen, "before": before, "trainer": trainer}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    base = tmp_path_factory.mktemp("amp")
    return {"bf16": _run(base / "bf16", "bfloat16"), "fp32": _run(base / "fp32", "auto")}


def test_bf16_autocast_runs_the_forward_in_bf16_on_cpu(runs) -> None:
    bf16, fp32 = runs["bf16"], runs["fp32"]
    assert bf16["trainer"].amp_dtype is torch.bfloat16 and not bf16["trainer"].scaler.is_enabled()
    assert fp32["trainer"].amp_dtype is None  # "auto" on CPU: fp32, as before
    assert bf16["seen"] and set(bf16["seen"]) == {torch.bfloat16}
    assert set(fp32["seen"]) == {torch.float32}
    losses, ref = bf16["res"].losses, fp32["res"].losses
    assert len(losses) == STEPS and all(np.isfinite(losses))
    # Same data, same initial weights: bf16 rounding changes the loss a little, not a lot.
    assert losses[0] != ref[0] and losses[0] == pytest.approx(ref[0], rel=0.02)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses


def test_bf16_training_keeps_fp32_weights_and_moves_them(runs) -> None:
    bf16 = runs["bf16"]
    st = torch.load(bf16["res"].last_checkpoint, weights_only=False)
    floats = {k: v for k, v in st["backbone"].items() if v.is_floating_point()}
    assert floats and all(v.dtype == torch.float32 for v in floats.values())
    moved = [k for k, v in floats.items() if "running" not in k and not torch.equal(v, bf16["before"][k])]
    assert len(moved) > len(floats) // 2
    assert st["config"]["amp_dtype"] == "bfloat16"


def test_bf16_checkpoint_exports_to_fp32_onnx(runs, tmp_path: Path) -> None:
    import onnx

    from training.data.synthetic import SyntheticFaces
    from training.export import export_onnx, parity_check
    from training.train import load_backbone_from_checkpoint

    net, _ = load_backbone_from_checkpoint(runs["bf16"]["res"].last_checkpoint)
    path = export_onnx(net, tmp_path / "bf16.onnx")
    model = onnx.load(str(path))
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT}
    crops = [SyntheticFaces(4, 2, seed=9).load(i)[0] for i in range(6)]
    rep = parity_check(net, path, crops)
    assert rep["passed"] and rep["min_cosine_raw"] > 0.9999


def test_amp_dtype_resolution() -> None:
    from training.train import amp_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    cfg = TrainConfig()
    assert amp_dtype(cfg, cpu) is None and amp_dtype(cfg, cuda) is torch.float16  # the default
    assert amp_dtype(cfg.model_copy(update={"amp": False}), cuda) is None
    assert amp_dtype(cfg.model_copy(update={"amp_dtype": "bfloat16"}), cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="needs CUDA"):
        amp_dtype(cfg.model_copy(update={"amp_dtype": "float16"}), cpu)
    with pytest.raises(ValueError):
        TrainConfig.model_validate({"amp_dtype": "fp8"})

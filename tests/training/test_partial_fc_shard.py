"""Sharded Partial FC on 2 CPU ranks (gloo, spawned here): exact against the unsharded head,
positives always sampled, classifier memory halved, DDP gradients and resume in the loop.

One spawn serves every test of the module (it costs seconds); each scenario reports its own
result or traceback. References are computed in this process, without the sharded code:
the full head + ``F.cross_entropy``, or a hand-built ArcFace softmax in float64.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from training.heads import build_head, shard_range

WORLD = 2
D, C, B = 16, 41, 6  # 41 classes: shards of 21 and 20 (uneven on purpose); B per rank
HEADS = {
    "softmax": {},
    "cosface": {"s": 32.0, "m": 0.35},
    "arcface": {"s": 32.0, "m": 0.5},
    "combined": {"s": 32.0},
    "kappaface": {"s": 32.0, "class_counts": list(range(1, C + 1))},
}
MEM_CLASSES, MEM_DIM = 200_000, 128
SAMPLED_C, SAMPLED_RATE, SAMPLED_S, SAMPLED_M = 200, 0.1, 32.0, 0.5


# ------------------------------------------------------------------ shared inputs
def _data() -> dict[str, torch.Tensor]:
    """The global batch and the full classifier, identical in every process."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * B, D, generator=g)
    y = torch.randint(0, C, (WORLD * B,), generator=g)
    y[0], y[1], y[5], y[7] = 0, C - 1, -1, y[2]  # both shards' edges, an ignored row, a repeat
    return {
        "x": x,
        "y": y,
        "w": torch.randn(C, D, generator=g),
        "bias": torch.randn(C, generator=g),
        "margins": torch.linspace(0.2, 0.7, C),  # distinct per class: a wrong lookup shows
    }


def _load(head: torch.nn.Module, data: dict[str, torch.Tensor], start: int, count: int) -> None:
    with torch.no_grad():
        head.weight.copy_(data["w"][start : start + count])
        if getattr(head, "bias", None) is not None:
            head.bias.copy_(data["bias"][start : start + count])
        if hasattr(head, "margins"):
            head.margins.copy_(data["margins"])


# ------------------------------------------------------------------ scenarios (child processes)
def _equivalence(rank: int, tmp: str) -> dict[str, Any]:
    from training.heads import build_sharded_head

    data, out = _data(), {}
    mine = slice(rank * B, (rank + 1) * B)
    for name, kw in HEADS.items():
        pfc = build_sharded_head(name, D, C, sample_rate=1.0, **kw).train()
        _load(pfc.head, data, *shard_range(C, rank, WORLD))
        emb = data["x"][mine].clone().requires_grad_(True)
        loss = pfc(emb, data["y"][mine])
        loss.backward()
        out[name] = {
            "loss": float(loss.detach()),
            "emb_grad": emb.grad.tolist(),
            "w_grad": pfc.head.weight.grad.tolist(),
            "bias_grad": None if name != "softmax" else pfc.head.bias.grad.tolist(),
        }
    return out


def _sampled(rank: int, tmp: str) -> dict[str, Any]:
    from training.heads import build_sharded_head

    g = torch.Generator().manual_seed(1)
    w = torch.randn(SAMPLED_C, D, generator=g)
    pfc = build_sharded_head("arcface", D, SAMPLED_C, sample_rate=SAMPLED_RATE, s=SAMPLED_S, m=SAMPLED_M)
    start, count = shard_range(SAMPLED_C, rank, WORLD)
    with torch.no_grad():
        pfc.head.weight.copy_(w[start : start + count])
    steps = []
    for step in range(6):
        x = torch.randn(WORLD * B, D, generator=g)
        # step 5: more distinct positives on rank 1's shard than its sample size (10)
        y = torch.arange(100, 112) if step == 5 else torch.randint(0, SAMPLED_C, (WORLD * B,), generator=g)
        mine = slice(rank * B, (rank + 1) * B)
        torch.manual_seed(100 * step + rank)
        class_ids, _ = pfc.train().sample(y)
        torch.manual_seed(100 * step + rank)  # forward draws the same sample
        loss = pfc(x[mine], y[mine])
        steps.append(
            {"x": x.tolist(), "y": y.tolist(), "ids": class_ids.tolist(), "loss": float(loss.detach())}
        )
    return {"w": w.tolist(), "steps": steps, "shard": [start, count]}


def _memory(rank: int, tmp: str) -> dict[str, Any]:
    import torch.distributed as dist

    from training.experiments.pfc_memory import step_memory
    from training.heads import build_sharded_head

    g = torch.Generator().manual_seed(2)
    x = torch.randn(WORLD * B, MEM_DIM, generator=g)
    y = torch.randint(0, MEM_CLASSES, (WORLD * B,), generator=g)
    out: dict[str, Any] = {}
    if rank == 0:  # the unsharded head on the whole batch, measured alone

        def full() -> torch.nn.Module:
            head = build_head("arcface", MEM_DIM, MEM_CLASSES).train()
            F.cross_entropy(head(x, y), y).backward()
            return head

        out["unsharded"] = step_memory(full)
    dist.barrier()
    mine = slice(rank * B, (rank + 1) * B)

    def sharded() -> torch.nn.Module:
        pfc = build_sharded_head("arcface", MEM_DIM, MEM_CLASSES).train()
        pfc(x[mine], y[mine]).backward()
        return pfc

    out["sharded"] = step_memory(sharded)
    return out


def _ddp_backbone(rank: int, tmp: str) -> dict[str, Any]:
    """The loop's own wiring (train.ddp_train_module, train.clip_grad_norm) on a linear backbone."""
    from training.heads import build_sharded_head
    from training.train import FaceTrainModule, clip_grad_norm, ddp_train_module

    data = _data()
    g = torch.Generator().manual_seed(3)
    inputs, backbone_w = torch.randn(WORLD * B, 8, generator=g), torch.randn(D, 8, generator=g)
    backbone = torch.nn.Linear(8, D, bias=False)
    with torch.no_grad():
        backbone.weight.copy_(backbone_w)
    head = build_sharded_head("arcface", D, C, s=32.0, m=0.5).train()
    _load(head.head, data, *shard_range(C, rank, WORLD))
    module = FaceTrainModule(backbone, head)
    model = ddp_train_module(module, torch.device("cpu"), WORLD)
    mine = slice(rank * B, (rank + 1) * B)
    loss = model(inputs[mine], data["y"][mine], torch.arange(B))
    loss.backward()
    grads = {"backbone": backbone.weight.grad.tolist(), "head": head.weight.grad.tolist()}
    norm = clip_grad_norm(module, 0.5, sharded=True)
    return {
        "loss": float(loss.detach()),
        "inputs": inputs.tolist(),
        "backbone_w": backbone_w.tolist(),
        "grads": grads,
        "norm": float(norm),
        "clipped_backbone": backbone.weight.grad.tolist(),
    }


def _trainer_cfg(out: Path, max_steps: int) -> Any:
    from training.config import TrainConfig

    return TrainConfig.model_validate(
        {
            "name": "shard",
            "out_dir": str(out),
            "seed": 5,
            "epochs": 3,
            "max_steps": max_steps,
            "batch_size": 4,
            "checkpoint_every": 2,
            "threads": 1,
            "log_every": 100,
            "data": {
                "num_workers": 0,
                "flip": True,
                "sources": [{"kind": "synthetic", "num_classes": 16, "per_class": 2}],
            },
            "model": {
                "backbone": "mbf",
                "embedding_size": 32,
                "backbone_kwargs": {"blocks": [1, 1, 1, 1], "scale": 1},
            },
            "head": {"name": "kappaface", "hyper": {"s": 16.0}, "partial_fc": 0.75},
            "optim": {"name": "sgd", "lr": 0.05, "lr_batch": 8, "schedule": "cosine"},
        }
    )


def _trainer(rank: int, tmp: str) -> dict[str, Any]:
    """Full run vs interrupted + resumed run, through the real Trainer (torchrun's env vars)."""
    from training.train import Trainer

    base = Path(tmp)
    full = Trainer(_trainer_cfg(base / "full", 4), progress=False).fit()
    Trainer(_trainer_cfg(base / "resumed", 2), progress=False).fit()
    resumed = Trainer(_trainer_cfg(base / "resumed", 4), resume=base / "resumed", progress=False)
    resumed_head_type = type(resumed.module.head).__name__
    res = resumed.fit()
    return {
        "full_losses": full.losses,
        "resumed_losses": res.losses,
        "full_ckpt": str(full.last_checkpoint),
        "resumed_ckpt": str(res.last_checkpoint),
        "head_type": resumed_head_type,
        "model_type": type(resumed.model.backbone).__name__,
    }


SCENARIOS: dict[str, Callable[[int, str], dict[str, Any]]] = {
    "equivalence": _equivalence,
    "sampled": _sampled,
    "memory": _memory,
    "ddp_backbone": _ddp_backbone,
    "trainer": _trainer,
}


def _worker(rank: int, world: int, port: int, names: list[str], tmp: str, queue: Any) -> None:  # pragma: no cover
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=90))
    try:
        torch.set_num_threads(1)
        for name in names:
            try:
                # Plain lists and numbers only: a tensor would travel as a shared-memory handle
                # that dies with this process.
                queue.put((name, rank, SCENARIOS[name](rank, tmp)))
            except Exception:  # reported to the parent, which fails the test
                queue.put((name, rank, {"error": traceback.format_exc()}))
                raise
    finally:
        dist.destroy_process_group()


def _spawn(names: list[str], tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """Run scenarios ``names`` on 2 fresh gloo ranks; ``{name: [rank 0 result, rank 1 result]}``."""
    from training.experiments.pfc_memory import exact_malloc
    from training.spawn import run_ranks

    got = run_ranks(_worker, WORLD, names, str(tmp), items=WORLD * len(names), stop=lambda item: "error" in item[2],
                    around_start=exact_malloc)  # peak RSS then follows the tensors, not glibc's heap retention
    results: dict[str, list[dict[str, Any]]] = {name: [{}, {}] for name in names}
    for name, rank, out in got:
        results[name][rank] = out
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The head on its own (a few seconds after the spawn)."""
    return _spawn(["equivalence", "sampled", "memory"], tmp_path_factory.mktemp("shard"))


@pytest.fixture(scope="module")
def loop_ranks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The training loop's wiring and the Trainer (three short runs per rank)."""
    tmp = tmp_path_factory.mktemp("loop")
    return {**_spawn(["ddp_backbone", "trainer"], tmp), "tmp": tmp}


def _ok(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in results:
        assert r, "scenario did not report (an earlier one failed on a rank)"
        assert "error" not in r, r["error"]
    return results


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", list(HEADS))
def test_partial_fc_shard_equals_full_softmax_at_rate_one(ranks, name: str) -> None:
    """Loss and the gradients of embeddings and (concatenated) centres equal the unsharded
    head's cross-entropy on the whole batch: the margin lands once, on the owning rank."""
    r0, r1 = (r[name] for r in _ok(ranks["equivalence"]))
    data = _data()
    head = build_head(name, D, C, **HEADS[name]).train()
    _load(head, data, 0, C)
    x = data["x"].clone().requires_grad_(True)
    ref = F.cross_entropy(head(x, data["y"]), data["y"], ignore_index=-1)
    ref.backward()
    print(f"{name}: sharded {r0['loss']:.7f} / {r1['loss']:.7f}, full {float(ref.detach()):.7f}")
    assert r0["loss"] == r1["loss"]  # every rank reports the same global loss
    assert abs(r0["loss"] - float(ref.detach())) < 1e-5
    emb_grad = torch.tensor(r0["emb_grad"] + r1["emb_grad"])
    w_grad = torch.tensor(r0["w_grad"] + r1["w_grad"])
    assert w_grad.shape == (C, D)
    assert torch.allclose(emb_grad, x.grad, atol=1e-6, rtol=1e-4)
    assert torch.allclose(w_grad, head.weight.grad, atol=1e-7, rtol=1e-4)
    if name == "softmax":
        assert torch.allclose(torch.tensor(r0["bias_grad"] + r1["bias_grad"]), head.bias.grad, atol=1e-7)


def test_partial_fc_shard_sampled_union_keeps_positives(ranks) -> None:
    """Rate 0.1: each rank draws ceil(0.1·100) centres from its own range, always including
    the batch's positives there; the loss is the softmax over exactly the union (hand-built
    ArcFace logits in float64)."""
    r0, r1 = _ok(ranks["sampled"])
    w = torch.tensor(r0["w"], dtype=torch.float64)
    for k, (s0, s1) in enumerate(zip(r0["steps"], r1["steps"])):
        y = torch.tensor(s0["y"])
        for ids, (start, count) in ((s0["ids"], r0["shard"]), (s1["ids"], r1["shard"])):
            owned = {int(c) for c in y if start <= c < start + count}
            assert all(start <= c < start + count for c in ids) and sorted(set(ids)) == ids
            assert owned <= set(ids)
            assert len(ids) == max(len(owned), math.ceil(SAMPLED_RATE * count))
        union = torch.tensor(s0["ids"] + s1["ids"])
        x = torch.tensor(s0["x"], dtype=torch.float64)
        cos = F.normalize(x, dim=1) @ F.normalize(w[union], dim=1).T
        col = torch.searchsorted(union, y)
        theta = torch.acos(cos[torch.arange(len(y)), col])
        assert bool((theta + SAMPLED_M < math.pi).all())  # ArcFace's regular branch
        logits = SAMPLED_S * cos
        logits[torch.arange(len(y)), col] = SAMPLED_S * torch.cos(theta + SAMPLED_M)
        expected = float((torch.logsumexp(logits, 1) - logits[torch.arange(len(y)), col]).mean())
        assert s0["loss"] == s1["loss"]
        assert abs(s0["loss"] - expected) < 1e-5, (k, s0["loss"], expected)
    assert len(r1["steps"][5]["ids"]) == 12  # all 12 positives, more than the sample size 10


def test_partial_fc_shard_memory_per_rank_is_half(ranks) -> None:
    """200k classes × 128-d: each of 2 ranks holds half the centres and half their gradient;
    the peak RSS a step adds shrinks about as much."""
    r0, r1 = _ok(ranks["memory"])
    full_bytes = MEM_CLASSES * MEM_DIM * 4  # fp32, by hand
    assert r0["unsharded"]["param_bytes"] == r0["unsharded"]["grad_bytes"] == full_bytes
    for r in (r0, r1):
        assert r["sharded"]["param_bytes"] == r["sharded"]["grad_bytes"] == full_bytes // 2
    full_peak = r0["unsharded"]["peak_rss_delta_bytes"]
    mib = 2**20
    print(
        f"classifier param+grad per rank: 1 rank {2 * full_bytes / mib:.1f} MiB, "
        f"2 ranks {full_bytes / mib:.1f} MiB; peak RSS delta: 1 rank {full_peak / mib:.1f} MiB, "
        f"2 ranks {r0['sharded']['peak_rss_delta_bytes'] / mib:.1f} / "
        f"{r1['sharded']['peak_rss_delta_bytes'] / mib:.1f} MiB"
    )
    assert full_peak >= 2 * full_bytes  # at least the weight and its gradient were resident
    for r in (r0, r1):
        assert 0.4 < r["sharded"]["peak_rss_delta_bytes"] / full_peak < 0.6


@pytest.mark.slow
def test_partial_fc_shard_ddp_backbone_gradient_and_clip(loop_ranks) -> None:
    """Through the loop's DDP wiring the backbone gradient is that of the whole batch on one
    process (not 1/W of it), the centres are not averaged, and the clip norm is global."""
    from training.train import FaceTrainModule

    r0, r1 = _ok(loop_ranks["ddp_backbone"])
    data = _data()
    backbone = torch.nn.Linear(8, D, bias=False)
    with torch.no_grad():
        backbone.weight.copy_(torch.tensor(r0["backbone_w"]))
    head = build_head("arcface", D, C, s=32.0, m=0.5).train()
    _load(head, data, 0, C)
    module = FaceTrainModule(backbone, head)
    loss = module(torch.tensor(r0["inputs"]), data["y"], torch.arange(WORLD * B))
    loss.backward()
    assert r0["loss"] == pytest.approx(float(loss.detach()), abs=1e-5)
    for r in (r0, r1):
        assert torch.allclose(
            torch.tensor(r["grads"]["backbone"]), backbone.weight.grad, rtol=1e-4, atol=1e-7
        )
    w_grad = torch.tensor(r0["grads"]["head"] + r1["grads"]["head"])
    assert torch.allclose(w_grad, head.weight.grad, rtol=1e-4, atol=1e-7)
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), 0.5)
    assert r0["norm"] == pytest.approx(float(norm), rel=1e-5) and r1["norm"] == r0["norm"]
    assert torch.allclose(torch.tensor(r1["clipped_backbone"]), backbone.weight.grad, rtol=1e-4, atol=1e-8)


@pytest.mark.slow
def test_partial_fc_shard_trainer_resume_and_checkpoints(loop_ranks) -> None:
    """torchrun-style Trainer on 2 ranks: sharded head, backbone-only DDP, one checkpoint per
    rank, and an interrupted + resumed run repeats the uninterrupted one exactly."""
    from training.train import load_backbone_from_checkpoint

    r0, r1 = _ok(loop_ranks["trainer"])
    assert r0["head_type"] == "ShardedPartialFC" and r0["model_type"] == "DistributedDataParallel"
    assert len(r0["full_losses"]) == 4 and all(math.isfinite(v) for v in r0["full_losses"])
    assert r0["full_losses"] == r1["full_losses"]  # one global loss
    assert r0["resumed_losses"] == r0["full_losses"]
    main, shard1 = Path(r0["full_ckpt"]), Path(r1["full_ckpt"])
    assert shard1 == main.with_name(main.stem + ".rank1.pt")
    full = [torch.load(p, weights_only=False) for p in (main, shard1)]
    resumed = [torch.load(Path(r["resumed_ckpt"]), weights_only=False) for r in (r0, r1)]
    for rank, (st, res) in enumerate(zip(full, resumed)):
        start, count = shard_range(16, rank, WORLD)
        assert st["shard"] == {"rank": rank, "world": WORLD, "class_start": start, "num_local": count}
        assert st["head"]["head.weight"].shape == (count, 32)
        for part in ("backbone", "head"):
            for k, v in st[part].items():
                assert torch.equal(v, res[part][k]), (rank, part, k)
    assert not torch.equal(full[0]["head"]["head.weight"][:4], full[1]["head"]["head.weight"][:4])
    for k, v in full[0]["backbone"].items():  # DDP keeps the replicas equal
        if "num_batches" not in k and "running" not in k:
            assert torch.equal(v, full[1]["backbone"][k]), k
    _, meta = load_backbone_from_checkpoint(main)  # export reads rank 0's file alone
    assert meta["head_hparams"]["sharded_ranks"] == 2 and meta["head_hparams"]["num_classes"] == 16
    # one process cannot resume a 2-rank run: its shards do not fit one head
    from training.train import Trainer

    with pytest.raises(ValueError, match="same number of ranks"):
        Trainer(_trainer_cfg(loop_ranks["tmp"] / "w1", 6), resume=main, progress=False)

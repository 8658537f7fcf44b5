"""The training loop: ``facegate train --config FILE`` or ``torchrun -m training.train --config FILE``.

One code path for every scale. Single process on CPU is just DDP with a world of
one: under ``torchrun`` each process drives one GPU, shards the sampler by rank and
wraps the model in DistributedDataParallel; without it nothing is wrapped.

What a step does: backbone -> embedding -> head (margin logits; optionally Partial-FC
over a sample of class centres) -> cross-entropy -> backward (GradScaler under fp16 AMP
on CUDA; bf16 autocast, on CPU or CUDA, needs none) -> clip the global gradient norm ->
optimiser step -> per-step LR schedule.

With more than one rank the class centres are sharded (model parallel, as arcface_torch):
each rank holds a contiguous share of the classes in a
:class:`~training.heads.sharded_fc.ShardedPartialFC`, which gathers the embeddings and
computes the exact cross-entropy across ranks; only the backbone is wrapped in DDP (the
centres are nobody else's, so their gradients are never all-reduced). Checkpoints are then
one file per rank: ``step_N.pt`` (rank 0, everything the service export needs) and
``step_N.rankR.pt`` (rank R's full state: its shard, its optimiser state, its RNG); a
resume must use the same number of ranks. Under fp16 AMP each rank's GradScaler decides
alone whether to skip a step: an overflow in the backbone reaches every rank (its gradient is
all-reduced), one confined to a rank's fp32 centre gradients would not (not guarded).

State that makes ``--resume`` exact: model, head (KappaFace keeps its per-sample
buffers and margins as buffers, so they are in its state_dict), optimiser, scheduler,
GradScaler, torch/numpy/python RNG, and the position in the epoch. The sampler's
order and each sample's augmentation are pure functions of (seed, epoch, position),
so the resumed run sees exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.checkpoints import publish_last
from training.config import DataSource, TrainConfig, load_config
from training.data.base import ConcatCrops, CropDataset, Subset
from training.data.samplers import build_sampler, zipf_subset
from training.data.transforms import Augment


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; otherwise a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(cfg: TrainConfig, d: Dist) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda":
        return torch.device(f"cuda:{d.local_rank}")
    return torch.device(cfg.device)


# --------------------------------------------------------------------------- data
def build_source(src: DataSource) -> CropDataset:
    """One configured source as a dataset (no augmentation; the caller sets it on the whole)."""
    from training.data.lfw import read_people

    if src.kind == "synthetic":
        from training.data.synthetic import SyntheticFaces

        ds: CropDataset = SyntheticFaces(src.num_classes, src.per_class, seed=src.seed)
    elif src.kind in ("imagefolder", "lfw"):
        from training.data.imagefolder import ImageFolderDataset

        people = None
        if src.people_file is not None:
            people = read_people(src.people_file)
        elif src.kind == "lfw" and src.view1_train:
            people = read_people(Path(src.root) / "peopleDevTrain.txt")  # type: ignore[arg-type]
        ds = ImageFolderDataset(
            src.root,
            people=people,
            min_images=src.min_images,
            max_people=src.max_people,  # type: ignore[arg-type]
            aligned=src.aligned,
            cache_dir=src.cache_dir,
        )
    elif src.kind == "recordio":
        from training.data.recordio import RecordIODataset

        ds = RecordIODataset(src.root)  # type: ignore[arg-type]
    else:  # pragma: no cover - pydantic restricts kind
        raise ValueError(src.kind)
    if src.long_tail_max is not None:
        ds = Subset(ds, zipf_subset(ds.labels, src.long_tail_max, src.long_tail_exponent, seed=src.seed))
    return ds


def build_dataset(cfg: TrainConfig) -> CropDataset:
    parts = [build_source(s) for s in cfg.data.sources]
    aug = Augment(
        flip=cfg.data.flip,
        brightness=cfg.data.color_jitter,
        contrast=cfg.data.color_jitter,
        saturation=cfg.data.color_jitter,
    )
    ds = parts[0] if len(parts) == 1 else ConcatCrops(parts)
    ds.augment = aug
    return ds


def _worker_init(_: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # each worker decodes on one core; N workers = N cores
    torch.set_num_threads(1)


def make_loader(
    ds: CropDataset, sampler: Any, cfg: TrainConfig, device: torch.device, epoch: int = 0
) -> torch.utils.data.DataLoader:
    """A loader for one epoch. Its own generator keeps the global torch RNG untouched (the
    loader draws a worker base seed from it), so a resumed run's RNG stream matches."""
    nw = cfg.data.num_workers
    gen = torch.Generator().manual_seed(cfg.seed * 1000003 + epoch)
    return torch.utils.data.DataLoader(
        ds,
        generator=gen,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=nw,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=cfg.data.prefetch_factor if nw > 0 else None,
        worker_init_fn=_worker_init if nw > 0 else None,
    )


# --------------------------------------------------------------------------- model
def build_head_for(cfg: TrainConfig, ds: CropDataset, world: int = 1) -> nn.Module:
    """The configured head (KappaFace gets the per-sample/class information it needs);
    with ``world > 1`` this rank's shard of it (needs the process group)."""
    from training.heads import build_head, build_sharded_head

    hyper = dict(cfg.head.hyper)
    if cfg.head.name == "kappaface":
        hyper.setdefault("num_samples", len(ds))
        hyper.setdefault("class_counts", torch.as_tensor(np.bincount(ds.labels, minlength=ds.num_classes)))
    if world > 1:
        return build_sharded_head(
            cfg.head.name, cfg.model.embedding_size, ds.num_classes, cfg.head.partial_fc, **hyper
        )
    if cfg.head.partial_fc < 1.0:
        hyper["sample_rate"] = cfg.head.partial_fc  # build_head wraps the head in PartialFC
    return build_head(cfg.head.name, cfg.model.embedding_size, ds.num_classes, **hyper)


class FaceTrainModule(nn.Module):
    """backbone + head + loss as one module: one forward for the loop.

    ``backbone_grad_scale`` multiplies the embedding gradient on its way into the backbone.
    Under DDP with a sharded head it is the world size: the sharded head already gives each
    rank the exact gradient of the global loss for its embeddings, and DDP's gradient
    *average* over ranks would otherwise shrink the backbone gradient W times.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, backbone_grad_scale: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.backbone_grad_scale = float(backbone_grad_scale)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        from training.heads import ShardedPartialFC

        emb = self.backbone(x)
        emb = F.normalize(emb.float(), dim=1)
        if self.backbone_grad_scale != 1.0 and emb.requires_grad:
            scale = self.backbone_grad_scale
            emb.register_hook(lambda g: g * scale)
        if isinstance(self.head, ShardedPartialFC):  # exact cross-entropy across the ranks' shards
            return self.head(emb, labels, indices)
        if hasattr(self.head, "forward_sampled"):  # PartialFC: compact logits over the sampled centres
            logits, labels, _ = self.head.forward_sampled(emb, labels, indices)
        else:
            logits = self.head(emb, labels, indices)
        return F.cross_entropy(logits.float(), labels, ignore_index=-1)


def ddp_train_module(module: FaceTrainModule, device: torch.device, world: int) -> FaceTrainModule:
    """The module the loop calls under DDP: the same backbone and head objects, the backbone
    wrapped in DistributedDataParallel, the (sharded) head left out of it.

    ``module`` itself stays unwrapped, so checkpoints keep plain parameter names.
    """
    import inspect

    ddp_cls = nn.parallel.DistributedDataParallel
    # Buffers are not broadcast each step (as in arcface_torch): rank 0's BN statistics are
    # the ones checkpointed. torch 2.13 renamed the switch.
    no_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in inspect.signature(ddp_cls).parameters
        else {"broadcast_buffers": False}
    )
    ddp = ddp_cls(
        module.backbone,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=False,
        **no_sync,
    )
    return FaceTrainModule(ddp, module.head, backbone_grad_scale=world)


def clip_grad_norm(module: FaceTrainModule, max_norm: float, sharded: bool) -> torch.Tensor:
    """Clip by the norm of the *whole* model's gradient; returns that norm.

    With sharded centres the head's share is all-reduced, so every rank clips by the same
    factor (a per-rank norm would scale the replicated backbone differently on each rank).
    """
    if not sharded:
        return torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    import torch.distributed as dist

    grads = [p.grad for p in module.parameters() if p.grad is not None]
    n_backbone = sum(1 for p in module.backbone.parameters() if p.grad is not None)
    device = grads[0].device if grads else torch.device("cpu")
    sq = [g.detach().float().square().sum().to(device) for g in grads]
    backbone_sq = torch.stack(sq[:n_backbone]).sum() if n_backbone else torch.zeros((), device=device)
    head_sq = torch.stack(sq[n_backbone:]).sum() if len(sq) > n_backbone else torch.zeros((), device=device)
    dist.all_reduce(head_sq, op=dist.ReduceOp.SUM)
    total = torch.sqrt(backbone_sq + head_sq)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_ (its 1e-6 too)
    for g in grads:
        g.detach().mul_(coef.to(g.device))
    return total


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    ``auto`` keeps the historical behaviour: fp16 (+ GradScaler) on CUDA, fp32 on CPU.
    ``bfloat16`` works on CPU too (so CI exercises the mixed-precision path) and needs no
    GradScaler: bf16 has fp32's exponent range, so gradients do not underflow.
    """
    if not cfg.amp:
        return None
    if cfg.amp_dtype == "auto":
        return torch.float16 if device.type == "cuda" else None
    if cfg.amp_dtype == "float16":
        if device.type != "cuda":
            raise ValueError("amp_dtype = 'float16' needs CUDA (GradScaler); use 'bfloat16' on CPU")
        return torch.float16
    from torch.amp.autocast_mode import is_autocast_available

    if not is_autocast_available(device.type):
        raise ValueError(f"this torch build has no autocast on {device.type}")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bfloat16; use amp_dtype = 'float16'")
    return torch.bfloat16


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """LR multiplier per optimiser step: linear warm-up, then cosine / step / poly / constant."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = round(cfg.optim.warmup_epochs * steps_per_epoch)
    o = cfg.optim

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        if o.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if o.schedule == "poly":
            return max(0.0, 1 - t) ** o.poly_power
        if o.schedule == "step":
            return o.gamma ** sum(step >= m * total for m in o.milestones)
        return 1.0

    return f


def build_optimizer(cfg: TrainConfig, module: FaceTrainModule, world: int) -> torch.optim.Optimizer:
    o = cfg.optim
    lr = o.lr * cfg.batch_size * world / o.lr_batch  # linear scaling rule (arcface_torch: 0.1 per 1024)
    groups = [
        {"params": list(module.backbone.parameters()), "lr": lr},
        {"params": list(module.head.parameters()), "lr": lr * o.head_lr_mult},
    ]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=o.weight_decay)


# --------------------------------------------------------------------------- state
def rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def head_margins(head: nn.Module) -> torch.Tensor | None:
    m = getattr(head, "margins", None)
    return m.detach().float().cpu() if isinstance(m, torch.Tensor) else None


@dataclass
class TrainResult:
    out_dir: Path
    last_checkpoint: Path | None
    steps: int
    losses: list[float] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    data_summary: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Owns the run: model, data, optimiser, checkpoints, logging."""

    def __init__(
        self,
        cfg: TrainConfig,
        resume: Path | None = None,
        progress: bool = True,
        backbone: nn.Module | None = None,
        dataset: CropDataset | None = None,
    ) -> None:
        """``backbone`` / ``dataset`` override the configured ones (experiments with a custom
        network or a pre-built data set); checkpoints of such runs need the same override to load."""
        self.cfg = cfg
        self.dist = init_distributed(cfg.device)
        self.device = pick_device(cfg, self.dist)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed + self.dist.rank)
        self.progress = progress and self.dist.main
        self.out_dir = Path(cfg.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        if self.dist.main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.out_dir / "config.json")

        self.dataset = dataset if dataset is not None else build_dataset(cfg)
        if len(self.dataset) < cfg.batch_size:
            raise ValueError(
                f"dataset has {len(self.dataset)} images, fewer than one batch of {cfg.batch_size}"
            )
        self.sampler = build_sampler(
            self.dataset.labels,
            cfg.data.sampler,
            cfg.data.sampler_power,
            cfg.seed,
            self.dist.rank,
            self.dist.world,
        )
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size

        from training.backbones import get_backbone

        if backbone is None:
            backbone = get_backbone(
                cfg.model.backbone, embedding_size=cfg.model.embedding_size, **cfg.model.backbone_kwargs
            )
        head = build_head_for(cfg, self.dataset, self.dist.world)
        self.module = FaceTrainModule(backbone, head).to(self.device)
        self.model: nn.Module = self.module
        self.sharded = self.dist.world > 1
        if self.sharded:
            self.model = ddp_train_module(self.module, self.device, self.dist.world)
        self.optimizer = build_optimizer(cfg, self.module, self.dist.world)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg, self.steps_per_epoch)
        )
        self.amp_dtype = amp_dtype(cfg, self.device)
        self.use_amp = self.amp_dtype is not None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[float] = []
        self.evals: list[dict[str, Any]] = []
        self.last_ckpt: Path | None = None
        if resume is not None:
            self.load_checkpoint(resume)
        self.writer = None
        if self.dist.main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:  # tensorboard is a [train] extra; training works without it
                self.writer = None

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        st = self._state()
        if self.sharded:
            head = self.module.head
            st["shard"] = {
                "rank": self.dist.rank,
                "world": self.dist.world,
                "class_start": head.class_start,
                "num_local": head.num_local,
            }
        return st

    def _state(self) -> dict[str, Any]:
        return {
            "format": "facegate-train-v1",
            "backbone": self.module.backbone.state_dict(),
            "head": self.module.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "rng": rng_state(),
            "history": self.history,
            "evals": self.evals,
            "config": self.cfg.model_dump(mode="json"),
            "num_classes": self.dataset.num_classes,
            "data_summary": self.dataset.summary(),
            "head_hparams": _hparams(self.module.head),
        }

    def save_checkpoint(self, tag: str | None = None) -> Path | None:
        """Write a checkpoint; every rank calls it. Sharded runs: each rank writes its own
        file, and rank 0 publishes ``last.txt`` only after all of them are on disk."""
        name = tag or f"step_{self.global_step:08d}"
        path = self.ckpt_dir / f"{name}.pt"
        if self.sharded:
            import torch.distributed as dist

            if not self.dist.main:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                mine = rank_checkpoint(path, self.dist.rank)
                _atomic_save(self.state(), mine)
                self.last_ckpt = mine
            dist.barrier()
        if not self.dist.main:
            return None
        _atomic_save(self.state(), path)
        publish_last(self.ckpt_dir, path)  # last.txt + <run>/last.pt (training/checkpoints.py)
        self.last_ckpt = path
        old = sorted(p for p in self.ckpt_dir.glob("step_*.pt") if ".rank" not in p.name)
        for p in old[: -self.cfg.keep_checkpoints]:
            for shard in self.ckpt_dir.glob(f"{p.stem}.rank*.pt"):
                shard.unlink(missing_ok=True)
            p.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, path: Path) -> None:
        path = resolve_checkpoint(path)
        if self.dist.rank > 0:
            path = rank_checkpoint(path, self.dist.rank)
        st = torch.load(path, map_location="cpu", weights_only=False)
        saved_world = st.get("shard", {}).get("world", 1)
        if saved_world != self.dist.world:
            raise ValueError(
                f"{path} was written by {saved_world} rank(s), this run has {self.dist.world}: the class "
                "centres are sharded per rank, so resume with the same number of ranks"
            )
        self.module.backbone.load_state_dict(st["backbone"])
        self.module.head.load_state_dict(st["head"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.epoch, self.step_in_epoch, self.global_step = st["epoch"], st["step_in_epoch"], st["global_step"]
        self.history = list(st.get("history", []))
        self.evals = list(st.get("evals", []))
        set_rng_state(st["rng"])
        self.last_ckpt = path

    # ------------------------------------------------------------------ loop
    def _log(self, tag: str, value: float, step: int | None = None) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, self.global_step if step is None else step)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> float:
        self.model.train()
        dtype = self.amp_dtype or torch.float16  # ignored when disabled
        with torch.autocast(device_type=self.device.type, dtype=dtype, enabled=self.use_amp):
            loss = self.model(x, y, idx)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            clip_grad_norm(self.module, self.cfg.optim.grad_clip, self.sharded)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach())

    @torch.no_grad()
    def precise_bn(self, batches: int) -> None:
        """Replace BatchNorm running statistics by exact averages over ``batches`` training batches.

        Deterministic (fixed sampler epoch, no augmentation seed reuse), so an interrupted
        and resumed run ends with the same statistics as an uninterrupted one.
        """
        bns = [m for m in self.module.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average = exact mean over the batches seen
        sampler = build_sampler(self.dataset.labels, "shuffle", seed=self.cfg.seed + 12345)
        sampler.set_epoch(0)
        self.module.backbone.train()
        for i, (x, _, _) in enumerate(make_loader(self.dataset, sampler, self.cfg, self.device)):
            if i >= batches:
                break
            self.module.backbone(x.to(self.device))
        for m, mom in zip(bns, saved):
            m.momentum = mom

    def end_of_epoch(self) -> None:
        head = self.module.head
        if hasattr(head, "update_margins"):
            head.update_margins()
            m = head_margins(head)
            if m is not None:
                self._log("margins/mean", float(m.mean()))
                self._log("margins/min", float(m.min()))
                self._log("margins/max", float(m.max()))
                if self.writer is not None:
                    self.writer.add_histogram("margins", m, self.global_step)

    def run_eval(self) -> dict[str, Any]:
        if not self.cfg.eval.pairs or not self.dist.main:
            return {}
        from training.evaluate import TorchEmbedder, evaluate_pair_file

        emb = TorchEmbedder(self.module.backbone, self.device)
        out: dict[str, Any] = {"step": self.global_step, "epoch": self.epoch}
        for p in self.cfg.eval.pairs:
            rep = evaluate_pair_file(
                p,
                emb,
                root=self.cfg.eval.root,
                flip=self.cfg.eval.flip,
                max_pairs=self.cfg.eval.max_pairs,
                progress=False,
            )
            key = Path(p).stem
            out[key] = {
                "accuracy": rep["accuracy"],
                "auc": rep["auc"],
                "tar_at_far_1e-3": rep["tar_at_far"]["1e-3"]["tar"],
            }
            self._log(f"eval/{key}/accuracy", rep["accuracy"])
            self._log(f"eval/{key}/auc", rep["auc"])
        self.evals.append(out)
        return out

    def fit(self) -> TrainResult:
        cfg = self.cfg
        t0 = time.time()
        total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=total_steps, initial=self.global_step, desc=cfg.name, unit="step", dynamic_ncols=True
            )
        done = self.global_step >= total_steps
        while not done and self.epoch < cfg.epochs:
            self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * cfg.batch_size)
            loader = make_loader(self.dataset, self.sampler, cfg, self.device, self.epoch)
            for x, y, idx in loader:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, dtype=torch.long, non_blocking=True)  # int64: see the 69.08 trap
                idx = idx.to(self.device, non_blocking=True)
                loss = self.train_step(x, y, idx)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {self.global_step}")
                self.history.append(loss)
                self.global_step += 1
                self.step_in_epoch += 1
                if self.global_step % cfg.log_every == 0:
                    self._log("train/loss", loss)
                    self._log("train/lr", self.optimizer.param_groups[0]["lr"])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{loss:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", epoch=self.epoch
                    )
                if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self.global_step >= total_steps:
                    done = True
                    break
            if self.step_in_epoch >= self.steps_per_epoch:
                self.end_of_epoch()
                self.epoch += 1
                self.step_in_epoch = 0
                if (
                    cfg.eval.every_epochs
                    and self.epoch % cfg.eval.every_epochs == 0
                    and self.epoch < cfg.epochs
                ):
                    self.run_eval()
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if cfg.precise_bn_batches:
            self.precise_bn(cfg.precise_bn_batches)
        if cfg.eval.pairs:
            self.run_eval()
        path = self.save_checkpoint()
        if self.dist.main:
            (self.out_dir / "summary.json").write_text(
                json.dumps(
                    {
                        "steps": self.global_step,
                        "final_loss": self.history[-1] if self.history else None,
                        "first_loss": self.history[0] if self.history else None,
                        "evals": self.evals,
                        "data": self.dataset.summary(),
                        "seconds": time.time() - t0,
                    },
                    indent=2,
                    default=str,
                )
            )
        if self.writer is not None:
            self.writer.close()
        return TrainResult(
            self.out_dir,
            path or self.last_ckpt,
            self.global_step,
            list(self.history),
            list(self.evals),
            time.time() - t0,
            self.dataset.summary(),
        )


def _hparams(head: nn.Module) -> dict[str, Any]:
    fn = getattr(head, "hparams", None)
    return dict(fn()) if callable(fn) else {"name": type(head).__name__}


def _atomic_save(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def rank_checkpoint(path: Path, rank: int) -> Path:
    """Rank ``rank``'s file beside rank 0's ``path`` (``step_N.pt`` -> ``step_N.rankR.pt``)."""
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}.pt")


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint file, or a run / checkpoints folder (then its latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        for d in (path, path / "checkpoints"):
            if (d / "last.txt").is_file():
                return d / (d / "last.txt").read_text().strip()
        raise FileNotFoundError(f"no checkpoint in {path}")
    return path


def load_backbone_from_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained backbone (eval mode) and the checkpoint's metadata."""
    from training.backbones import get_backbone

    st = torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=False)
    cfg = TrainConfig.model_validate(st["config"])
    net = get_backbone(
        cfg.model.backbone, embedding_size=cfg.model.embedding_size, **cfg.model.backbone_kwargs
    )
    net.load_state_dict(st["backbone"])
    net.eval()
    meta = {
        k: st[k]
        for k in ("config", "num_classes", "data_summary", "head_hparams", "evals", "global_step", "epoch")
        if k in st
    }
    return net, meta


def train(cfg: TrainConfig, resume: Path | None = None, progress: bool = True) -> TrainResult:
    """Run training to the end of the configured budget; returns the losses and evaluations."""
    return Trainer(cfg, resume=resume, progress=progress).fit()


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``torchrun -m training.train --config FILE [--resume PATH]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--resume", type=Path)
    args = ap.parse_args(argv)
    res = train(load_config(args.config), args.resume)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            json.dumps(
                {
                    "steps": res.steps,
                    "last_checkpoint": str(res.last_checkpoint),
                    "final_loss": res.losses[-1] if res.losses else None,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

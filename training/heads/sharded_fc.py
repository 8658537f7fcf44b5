"""Partial FC with the class centres sharded across ranks (An et al. 2022, "Killing Two Birds
with One Stone"), the model-parallel form :class:`~training.heads.partial_fc.PartialFC` lacks.

Why: with millions of identities the (C, D) centre matrix, its gradient and its optimiser
state outgrow one device. Here rank ``r`` of ``W`` holds only the centres of a contiguous class
range (:func:`shard_range`, sizes differ by at most one), so all three are split ``W`` ways,
and the (N, C) logit matrix is split by columns.

One step, on every rank (per-rank batch ``B``, equal on all ranks: ``drop_last=True``):

1. all-gather the embeddings (``W·B``, D) and labels. The gather is autograd-aware: its
   backward sums every rank's gradient for the gathered matrix and keeps this rank's rows, so
   each rank's embeddings receive the contributions of every shard;
2. sample this rank's centres: every positive of the *gathered* batch that falls in the shard,
   plus random others up to ``ceil(sample_rate · count)``; labels owned by another rank become
   ``-1`` here (no margin, no target on this rank);
3. logits (``W·B``, C'_r) by the wrapped head's ``logits_for`` against the sampled centres,
   so every margin head applies its margin to the positive logit only, on the rank that owns
   the positive, with class-dependent state (KappaFace margins) looked up by global class id;
4. :func:`dist_cross_entropy`: the softmax cross-entropy over the union of all ranks' sampled
   sets, exact (all-reduce of the row max and of the sum of exponentials, as arcface_torch's
   DistCrossEntropy).

The returned loss is the mean over the global batch, identical on every rank, and backward on
every rank gives exactly ∂L/∂(own centres) and ∂L/∂(own embeddings): no gradient all-reduce
for the centres (each rank owns its shard; keep them out of DDP). DDP *averages* the backbone
gradient over ranks, so the training loop multiplies the embedding gradient by ``W`` to make
the backbone gradient ∂L/∂θ (``FaceTrainModule(backbone_grad_scale=W)`` in
:mod:`training.train`).

KappaFace: its sample memory is updated once per step from this rank's own batch through
``update_memory`` (which all-gathers itself), so every rank keeps the same memory and margins.
The state_dict holds this rank's shard only; :mod:`training.train` saves one checkpoint file
per rank and resumes only with the same world size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from training.heads.base import ClassifierHead, HeadWrapper
from training.heads.partial_fc import sample_classes

__all__ = ["ShardedPartialFC", "dist_cross_entropy", "gather_with_grad", "shard_range"]


def shard_range(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, count)`` of rank ``rank``'s contiguous class range; the first
    ``num_classes % world`` ranks get one class more (as arcface_torch)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} not in a world of {world}")
    if num_classes < world:
        raise ValueError(f"cannot shard {num_classes} classes over {world} ranks")
    base, extra = divmod(num_classes, world)
    return rank * base + min(rank, extra), base + (rank < extra)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward: sum the gathered gradient over ranks, keep own rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # All-reduce + slice rather than reduce-scatter: gloo has no reduce-scatter, and an
        # embedding gradient (W·B, D) is small next to the centre shard.
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        start = dist.get_rank(ctx.group) * ctx.rows
        return total[start : start + ctx.rows], None


def gather_with_grad(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """``cat`` of every rank's ``x`` (same shape on every rank), differentiable."""
    return _GatherWithGrad.apply(x, group)


def _gather(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts)


def dist_cross_entropy(
    logits: torch.Tensor,
    local_labels: torch.Tensor,
    valid: torch.Tensor,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Mean softmax cross-entropy of rows ``valid`` over the columns of *all* ranks' ``logits``.

    ``logits`` (N, C'_r) are this rank's columns for the same N rows on every rank;
    ``local_labels[i]`` is the target column on the one rank that holds it, ``-1`` on the
    others. Row max and the sums of ``exp(z − max)`` and of the target logit are all-reduced,
    so the value is exactly ``F.cross_entropy`` of the column-concatenated logits.

    The gradient is this rank's part of ∂L/∂logits and needs no backward communication: the
    reduced sums enter as ``local + (reduced − local).detach()`` — the value of the reduced
    sum, the derivative of the local one. The max is a shift that cancels in the loss, so it
    carries no gradient.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    with torch.no_grad():
        row_max = logits.max(dim=1).values
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
    # Shift first, then exp: ``logsumexp(z) − max`` would round at the magnitude of z (s = 64:
    # ~8e-6 absolute), the shifted form at that of the difference.
    shifted = logits - row_max.unsqueeze(1)
    sum_exp = shifted.exp().sum(dim=1)
    owned = local_labels >= 0
    picked = shifted.gather(1, local_labels.clamp_min(0).unsqueeze(1)).squeeze(1)
    target = torch.where(owned, picked, torch.zeros_like(picked))
    with torch.no_grad():
        reduced = torch.stack([sum_exp, target]).detach().clone()  # one collective for both
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM, group=group)
    sum_exp = sum_exp + (reduced[0] - sum_exp.detach())
    target = target + (reduced[1] - target.detach())
    per_row = torch.log(sum_exp) - target
    return per_row[valid].mean()


class ShardedPartialFC(HeadWrapper):
    """Wrap a head built with ``shard=shard_range(C, rank, world)``; ``forward`` returns the loss.

    Needs an initialised process group (``torchrun``); a single process uses the plain head or
    :class:`~training.heads.partial_fc.PartialFC`. Attributes of the head (``margins``,
    ``update_margins``, ``weight``) are reachable through the wrapper.
    """

    def __init__(
        self, head: ClassifierHead, sample_rate: float = 1.0, group: dist.ProcessGroup | None = None
    ) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("ShardedPartialFC needs an initialised process group (run under torchrun)")
        self.group = group
        self.rank, self.world = dist.get_rank(group), dist.get_world_size(group)
        expected = shard_range(head.num_classes, self.rank, self.world)
        if (head.class_start, head.num_local) != expected:
            raise ValueError(
                f"rank {self.rank} of {self.world} must hold classes (start, count) = {expected}, "
                f"the head holds ({head.class_start}, {head.num_local}): build it with shard={expected}"
            )
        self.head = head
        self.sample_rate = float(sample_rate)

    @torch.no_grad()
    def sample(
        self, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class_ids, local_labels)`` for the *gathered* global ``labels``.

        ``class_ids``: sorted global ids of this rank's centres used this step (all of the
        shard in eval mode or at rate 1; else every positive in the shard plus random others
        up to ``ceil(rate·count)``). ``local_labels``: position in ``class_ids`` of each row's
        label, ``-1`` where the label is not on this rank (or is ``-1``).
        """
        start, count = self.head.class_start, self.head.num_local
        mine = (labels >= start) & (labels < start + count)
        num_sample = min(count, math.ceil(self.sample_rate * count))
        if not self.training or num_sample >= count:
            rows = torch.arange(count, device=labels.device)
        else:
            rows = sample_classes(torch.unique(labels[mine]) - start, count, num_sample, generator)
        class_ids = rows + start
        local = torch.searchsorted(class_ids, labels.clamp_min(0))
        return class_ids, torch.where(mine, local, torch.full_like(local, -1))

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-entropy loss (scalar, mean over the global batch; same value on every rank)."""
        if labels.dtype != torch.long:
            raise TypeError(f"labels must be int64 class indices, got {labels.dtype}")
        if self.training and indices is not None and hasattr(self.head, "update_memory"):
            self.head.update_memory(embeddings, labels, indices)  # all-gathers itself
        emb_all = gather_with_grad(embeddings, self.group)
        labels_all = _gather(labels, self.group)
        class_ids, local = self.sample(labels_all)
        # All of the shard: no class_ids, so no (count, D) copy of the centres and of its
        # gradient (local labels are then shard positions, which they already are).
        subset = None if class_ids.numel() == self.head.num_local else class_ids
        # indices=None: the memory update above already saw this batch once.
        logits = self.head.logits_for(emb_all, local, subset)
        return dist_cross_entropy(logits, local, labels_all >= 0, self.group)

    def hparams(self) -> dict[str, Any]:
        return {
            **self.head.hparams(),
            "partial_fc_sample_rate": self.sample_rate,
            "sharded_ranks": self.world,
        }

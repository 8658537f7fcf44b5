"""What all classification heads share: a class-centre matrix, cosines, and a target-logit hook.

A margin-softmax head turns embeddings into logits for cross-entropy. Every variant
(NormFace, CosFace, ArcFace, combined, KappaFace) does the same three things and differs only
in step 2:

1. ``cos = normalise(x) @ normalise(W)^T``   (N, C) cosines between samples and class centres;
2. replace each sample's *target* cosine ``cos[i, y_i]`` by a margin function of it;
3. multiply everything by the scale ``s``.

:class:`CosineHead` implements 1 and 3 once; subclasses implement :meth:`CosineHead.target_logit`
(step 2, in cosine units, before scaling). The ``class_ids`` argument of
:meth:`CosineHead.logits_for` lets :class:`~training.heads.partial_fc.PartialFC` evaluate the
same head on a sampled subset of class centres without knowing anything about the margin.

Conventions (as in InsightFace ``arcface_torch``):

* labels are int64 class indices; a label of ``-1`` means "no positive class here" (e.g. a
  sample whose class centre lives on another rank): its row gets no margin, and
  ``cross_entropy(..., ignore_index=-1)`` skips it.
* the head math always runs in at least fp32 (autocast disabled): cosines near 1 and ``acos``/``sqrt``
  of them are where fp16 loses the margin.
* embeddings are L2-normalised here even if the caller already did it (idempotent and cheap),
  so the raw backbone output can be passed directly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassifierHead", "CosineHead", "arc_margin_target"]


class ClassifierHead(nn.Module):
    """Interface of every head: ``(embeddings, labels[, indices]) -> logits (N, C)``.

    ``weight`` is the (C, D) class-centre matrix. ``logits_for`` computes logits against the
    centres of the global classes ``class_ids`` only, with ``labels`` given as positions in
    ``class_ids`` (``class_ids=None``: every centre the head holds, labels are class indices).

    ``shard=(start, count)`` makes the head hold only the centres of global classes
    ``start .. start+count-1`` (``weight`` is then (count, D); see
    :mod:`training.heads.sharded_fc`). ``num_classes`` stays the global count, so per-class
    state (KappaFace margins) is global and looked up by global class id; with
    ``class_ids=None`` labels are positions in the shard (global id − ``start``).
    """

    name: str = "base"
    weight: nn.Parameter

    def __init__(self, embedding_size: int, num_classes: int, shard: tuple[int, int] | None = None) -> None:
        super().__init__()
        if embedding_size <= 0 or num_classes <= 0:
            raise ValueError(
                f"embedding_size and num_classes must be positive, got {embedding_size}, {num_classes}"
            )
        start, count = (0, num_classes) if shard is None else (int(shard[0]), int(shard[1]))
        if start < 0 or count <= 0 or start + count > num_classes:
            raise ValueError(f"shard (start={start}, count={count}) is not inside [0, {num_classes})")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.class_start = start
        self.num_local = count
        # arcface_torch initialises centres with N(0, 0.01): only their direction matters for
        # cosine heads, and small values keep the plain-softmax head's initial logits near 0.
        # A sharded head allocates only its own rows: the full matrix never exists on one rank.
        self.weight = nn.Parameter(torch.normal(0.0, 0.01, (count, embedding_size)))

    def rows(self, class_ids: torch.Tensor) -> torch.Tensor:
        """Rows of ``weight`` holding the global classes ``class_ids`` (all must be in the shard)."""
        return class_ids if self.class_start == 0 else class_ids - self.class_start

    def global_classes(self, cols: torch.Tensor, class_ids: torch.Tensor | None) -> torch.Tensor:
        """Global class ids of logit columns ``cols`` (positions in ``class_ids``, or local rows)."""
        return cols + self.class_start if class_ids is None else class_ids[cols]

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (N, C) for ``F.cross_entropy(logits, labels, ignore_index=-1)``.

        ``indices`` (N,) are the dataset sample indices; only heads with per-sample state
        (KappaFace) use them, the others accept and ignore them so the loop can always pass them.
        """
        return self.logits_for(embeddings, labels, None, indices)

    def logits_for(self, embeddings: torch.Tensor, labels: torch.Tensor, class_ids: torch.Tensor | None,
                   indices: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters for the model card and logs (JSON-serialisable); never the shard,
        so every rank of a sharded run reports the same head."""
        return {"name": self.name, "embedding_size": self.embedding_size, "num_classes": self.num_classes}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams().items() if k != "name")


def _check_inputs(embeddings: torch.Tensor, labels: torch.Tensor, embedding_size: int) -> None:
    if embeddings.dim() != 2 or embeddings.shape[1] != embedding_size:
        raise ValueError(f"embeddings must be (N, {embedding_size}), got {tuple(embeddings.shape)}")
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(f"labels must be ({embeddings.shape[0]},), got {tuple(labels.shape)}")
    if labels.dtype != torch.long:
        # A float label silently indexes the wrong class; arcface_torch's "loss stuck at 69.08".
        raise TypeError(f"labels must be int64 class indices, got {labels.dtype}")


class CosineHead(ClassifierHead):
    """Normalised centres and embeddings, cosine logits scaled by ``s``, margin on the target.

    Subclasses override :meth:`target_logit`; the base implementation is the identity, which
    makes this class NormFace.
    """

    name = "normface"

    def __init__(
        self, embedding_size: int, num_classes: int, s: float = 64.0, shard: tuple[int, int] | None = None
    ) -> None:
        super().__init__(embedding_size, num_classes, shard)
        if s <= 0:
            raise ValueError(f"scale s must be positive, got {s}")
        self.s = float(s)

    def target_logit(self, cos_target: torch.Tensor, target_classes: torch.Tensor) -> torch.Tensor:
        """Margin function ``P(cos θ_y)`` in cosine units (before ``s``), one value per sample.

        ``target_classes`` are *global* class indices (after undoing any Partial-FC remapping),
        for heads whose margin depends on the class.
        """
        return cos_target

    def cosines(self, embeddings: torch.Tensor, class_ids: torch.Tensor | None = None) -> torch.Tensor:
        """cos θ (N, C'), clamped to [-1, 1] so ``acos``/``sqrt`` downstream stay finite."""
        weight = self.weight if class_ids is None else self.weight[self.rows(class_ids)]
        dtype = torch.promote_types(embeddings.dtype, torch.float32)  # fp16/bf16 -> fp32, fp64 stays
        cos = F.normalize(embeddings.to(dtype), dim=1) @ F.normalize(weight.to(dtype), dim=1).t()
        return cos.clamp(-1.0, 1.0)

    def logits_for(self, embeddings: torch.Tensor, labels: torch.Tensor, class_ids: torch.Tensor | None,
                   indices: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(embeddings, labels, self.embedding_size)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosines(embeddings, class_ids)
            rows = torch.nonzero(labels >= 0).squeeze(1)
            if rows.numel():
                cols = labels[rows]
                global_cls = self.global_classes(cols, class_ids)
                new_target = self.target_logit(cos[rows, cols], global_cls).to(cos.dtype)
                # In place: with millions of classes an (N, C) copy per step is real memory. Safe
                # for autograd because clamp saved its input, not this output, and cos[rows, cols]
                # above is a copy (advanced indexing).
                cos.index_put_((rows, cols), new_target)
            return cos * self.s

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "s": self.s}


def arc_margin_target(
    cos: torch.Tensor, margin: torch.Tensor | float, easy_margin: bool = False
) -> torch.Tensor:
    """``cos(θ + m)`` kept monotonically decreasing in θ on all of [0, π] (ArcFace).

    ``cos(θ + m)`` turns back up once ``θ + m > π``, which would *reward* the network for pushing
    a sample further from its own centre. The InsightFace fallback (``th``/``mm``) replaces it,
    for ``cos θ <= cos(π − m)``, by ``cos θ − m·sin(m)`` (a CosFace-like additive penalty equal
    to ``m·sin(π − m)``), which is decreasing in θ and lies below ``-1`` there, so the curve never
    rises. With ``easy_margin`` the margin is only applied while ``cos θ > 0`` (θ < 90°) and
    the plain cosine is used beyond: gentler, used for small or noisy data sets.

    ``margin`` may be a per-sample tensor (KappaFace) or a float.
    """
    m = torch.as_tensor(margin, dtype=cos.dtype, device=cos.device)
    cos_m, sin_m = torch.cos(m), torch.sin(m)
    # sqrt'(0) is infinite: a tiny floor keeps the gradient finite for samples exactly on a centre.
    sin_theta = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
    cos_theta_m = cos * cos_m - sin_theta * sin_m
    if easy_margin:
        return torch.where(cos > 0, cos_theta_m, cos)
    th = torch.cos(math.pi - m)
    mm = torch.sin(math.pi - m) * m
    return torch.where(cos > th, cos_theta_m, cos - mm)


class HeadWrapper(nn.Module):
    """A module around a head (Partial FC, its sharded form): the head's sizes and attributes
    (``margins``, ``update_margins``, ``weight``, hparams) are reachable through the wrapper."""

    head: ClassifierHead

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    @property
    def embedding_size(self) -> int:
        return self.head.embedding_size

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("head"), name)

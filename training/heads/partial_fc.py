"""Partial FC (An et al. 2022): sample a subset of class centres per training step.

Why: with millions of identities the (N, C) logit matrix and the gradient of all C centres
dominate a step, while most negatives contribute almost nothing. Sampling a fraction ``r`` of
the centres each step, *always including the centres of the batch's own classes*, keeps the
accuracy of the full softmax at a fraction of the cost (``r = 0.1`` in arcface_torch).

This wrapper works with every head in :mod:`training.heads` because heads compute logits
through ``logits_for(embeddings, labels, class_ids)``: the margin is applied by the wrapped
head against the sampled centres, with class-dependent state (KappaFace margins, its memory
buffer) looked up by *global* class id.

Two ways to call it:

* ``forward(emb, labels, indices)`` returns full-width (N, C) logits in which the unsampled
  classes are set to ``fill_value`` (-1e4, which ``exp`` turns into exactly 0 even in fp16), so
  ``F.cross_entropy(logits, labels)`` *is* the partial-FC loss and the training loop needs no
  special case. It saves most of the (N, C, D) matmul and of the softmax work, not the (N, C)
  logit memory; don't combine it with label smoothing (which would put mass on the filler).
* ``forward_sampled(emb, labels, indices)`` returns ``(logits (N, C'), local_labels, class_ids)``
  for loops that want the compact form (the arcface_torch way, for very many classes).

In eval mode, or with ``sample_rate >= 1``, it is exactly the wrapped head. As in arcface_torch
the centre matrix stays one dense parameter: unsampled centres get a zero gradient (the dense
gradient tensor is still allocated), and SGD momentum / weight decay still move them.
This is the single-process form: the process holds all C centres. Under ``torchrun`` the
training loop uses :class:`~training.heads.sharded_fc.ShardedPartialFC` instead, which splits
the centres across ranks (the arcface_torch form).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from training.heads.base import ClassifierHead, HeadWrapper

__all__ = ["PartialFC"]


def sample_classes(positives: torch.Tensor, total: int, num_sample: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Sorted ids of ``num_sample`` of ``total`` classes: every positive, then random others
    (all the positives when they alone reach ``num_sample``)."""
    if positives.numel() >= num_sample:
        return positives
    score = torch.rand(total, device=positives.device, generator=generator)
    score[positives] = 2.0  # scores are in [0, 1): top-k always keeps the positives
    return torch.topk(score, k=num_sample).indices.sort().values


class PartialFC(HeadWrapper):
    """Wrap ``head`` so that each training step uses ``ceil(sample_rate · C)`` centres (at least
    all positives of the batch). Attributes of the head (``margins``, ``update_margins``,
    ``weight``, ``hparams`` entries) are reachable through the wrapper.
    """

    def __init__(self, head: ClassifierHead, sample_rate: float = 0.1, fill_value: float = -1.0e4) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.head = head
        self.sample_rate = float(sample_rate)
        self.fill_value = float(fill_value)

    def _samples(self) -> bool:
        return self.training and self.sample_rate < 1.0

    @torch.no_grad()
    def sample(
        self, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(class_ids, local_labels)``.

        ``class_ids`` are the sorted sampled class indices (all positive classes of ``labels``
        plus random others up to ``ceil(rate·C)``); ``local_labels`` are ``labels`` remapped to
        positions in ``class_ids`` (``-1`` stays ``-1``).
        """
        c = self.num_classes
        num_sample = min(c, math.ceil(self.sample_rate * c))
        class_ids = sample_classes(torch.unique(labels[labels >= 0]), c, num_sample, generator)
        local = torch.searchsorted(class_ids, labels.clamp_min(0))
        local = torch.where(labels >= 0, local, labels)
        return class_ids, local

    def forward_sampled(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Compact form: logits over the sampled centres, remapped labels, sampled class ids."""
        if not self._samples():
            ids = torch.arange(self.num_classes, device=labels.device)
            return self.head(embeddings, labels, indices), labels, ids
        class_ids, local = self.sample(labels)
        return self.head.logits_for(embeddings, local, class_ids, indices), local, class_ids

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Full-width (N, C) logits; unsampled classes hold ``fill_value``. Labels stay global."""
        if not self._samples():
            return self.head(embeddings, labels, indices)
        logits, _, class_ids = self.forward_sampled(embeddings, labels, indices)
        full = logits.new_full((logits.shape[0], self.num_classes), self.fill_value)
        return full.index_copy(1, class_ids, logits)

    def hparams(self) -> dict[str, Any]:
        return {**self.head.hparams(), "partial_fc_sample_rate": self.sample_rate}

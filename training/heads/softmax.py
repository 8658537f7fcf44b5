"""Plain softmax classifier: ``logits = x W^T + b``, no normalisation, no margin.

The baseline every margin head is compared with; embeddings trained this way separate the
training classes but are not calibrated for cosine comparison of unseen identities.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.heads.base import ClassifierHead, _check_inputs

__all__ = ["SoftmaxHead"]


class SoftmaxHead(ClassifierHead):
    """Linear layer over the raw embedding (the caller's normalisation, if any, is kept)."""

    name = "softmax"

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        bias: bool = True,
        shard: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(embedding_size, num_classes, shard)
        self.bias = nn.Parameter(torch.zeros(self.num_local)) if bias else None

    def logits_for(self, embeddings: torch.Tensor, labels: torch.Tensor, class_ids: torch.Tensor | None,
                   indices: torch.Tensor | None = None) -> torch.Tensor:
        _check_inputs(embeddings, labels, self.embedding_size)
        rows = None if class_ids is None else self.rows(class_ids)
        weight = self.weight if rows is None else self.weight[rows]
        logits = embeddings @ weight.t()
        if self.bias is not None:
            logits = logits + (self.bias if rows is None else self.bias[rows])
        return logits

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "bias": self.bias is not None}

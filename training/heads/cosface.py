"""CosFace / AM-Softmax (Wang et al. 2018): target logit ``s · (cos θ_y − m)``.

An additive margin in cosine space: the target class must beat the others by ``m`` in cosine,
which is monotone in θ everywhere, so no special cases are needed.
"""

from __future__ import annotations

from typing import Any

import torch

from training.heads.base import CosineHead

__all__ = ["CosFaceHead"]


class CosFaceHead(CosineHead):
    """Defaults ``s = 64, m = 0.4`` (arcface_torch recipe)."""

    name = "cosface"

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.4,
        shard: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(embedding_size, num_classes, s, shard)
        self.m = float(m)

    def target_logit(self, cos_target: torch.Tensor, target_classes: torch.Tensor) -> torch.Tensor:
        return cos_target - self.m

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "m": self.m}

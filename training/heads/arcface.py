"""ArcFace (Deng et al. 2019): target logit ``s · cos(θ_y + m)``, an additive *angular* margin.

A margin in angle has a constant geodesic width on the hypersphere, unlike CosFace's margin in
cosine. ``cos(θ + m)`` stops decreasing once ``θ + m > π``; we use InsightFace's fallback there
(see :func:`training.heads.base.arc_margin_target`): for ``cos θ <= cos(π − m)`` the target
logit is ``cos θ − m·sin(m)``, so the logit stays monotonically decreasing in θ. ``easy_margin``
applies the margin only while ``cos θ > 0``.
"""

from __future__ import annotations

from typing import Any

import torch

from training.heads.base import CosineHead, arc_margin_target

__all__ = ["ArcFaceHead"]


class ArcFaceHead(CosineHead):
    """Defaults ``s = 64, m = 0.5`` (arcface_torch recipe), ``easy_margin=False``."""

    name = "arcface"

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        easy_margin: bool = False,
        shard: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(embedding_size, num_classes, s, shard)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)

    def target_logit(self, cos_target: torch.Tensor, target_classes: torch.Tensor) -> torch.Tensor:
        return arc_margin_target(cos_target, self.m, self.easy_margin)

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "m": self.m, "easy_margin": self.easy_margin}

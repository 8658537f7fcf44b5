"""Combined margin (InsightFace): target logit ``s · (cos(m1·θ + m2) − m3)``.

One head for the whole family: ``(m1, m2, m3) = (1, 0, 0)`` is NormFace, ``(1, m, 0)`` ArcFace,
``(1, 0, m)`` CosFace, ``(m, 0, 0)`` SphereFace-like; InsightFace's combined setting is
``(1, 0.3, 0.2)``.

Where ``m1·θ + m2 > π`` the cosine turns back up, so the target logit would *grow* as the
sample moves away from its centre; we keep it monotonically decreasing in θ:

* ``m1 == 1``: exactly ArcFace's fallback ``cos θ − m2·sin(m2) − m3`` for
  ``cos θ <= cos(π − m2)`` (so the ArcFace and CosFace special cases are bit-for-bit those
  heads, fallback branch included);
* ``m1 != 1``: the continuous extension ``−1 − m3 − (cos θ* − cos θ)`` beyond
  ``θ* = (π − m2)/m1`` (ArcFace's fallback constant is not monotone-safe once ``m1 > 1``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from training.heads.base import CosineHead, arc_margin_target

__all__ = ["CombinedMarginHead"]

_ACOS_EPS = 1e-7  # acos' is infinite at ±1


class CombinedMarginHead(CosineHead):
    """Defaults ``s = 64, (m1, m2, m3) = (1.0, 0.3, 0.2)`` (InsightFace's combined recipe)."""

    name = "combined"

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.3,
        m3: float = 0.2,
        shard: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(embedding_size, num_classes, s, shard)
        if m1 <= 0:
            raise ValueError(f"m1 must be positive (it multiplies the angle), got {m1}")
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    def target_logit(self, cos_target: torch.Tensor, target_classes: torch.Tensor) -> torch.Tensor:
        if self.m1 == 1.0:
            # Same code path as ArcFace (sin/cos expansion, no acos: stable gradient near θ = 0).
            arc = arc_margin_target(cos_target, self.m2) if self.m2 != 0.0 else cos_target
            return arc - self.m3
        theta = torch.acos(cos_target.clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS))
        inside = torch.cos(self.m1 * theta + self.m2) - self.m3
        theta_star = (math.pi - self.m2) / self.m1
        if theta_star >= math.pi:
            return inside
        beyond = -1.0 - self.m3 - (math.cos(theta_star) - cos_target)
        return torch.where(theta <= theta_star, inside, beyond)

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "m1": self.m1, "m2": self.m2, "m3": self.m3}

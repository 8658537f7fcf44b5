"""NormFace (Wang et al. 2017): ``logits = s · cos θ_j``, normalised features and centres, no margin.

Normalising both sides makes the training objective the same cosine the service thresholds
at inference; the scale ``s`` is needed because cosines in [-1, 1] alone cannot make the
softmax confident. All margin heads are NormFace plus a change to the target logit.
"""

from __future__ import annotations

from training.heads.base import CosineHead

__all__ = ["NormFaceHead"]


class NormFaceHead(CosineHead):
    """``s · cos θ`` for every class (defaults ``s = 64``, the arcface_torch value)."""

    name = "normface"

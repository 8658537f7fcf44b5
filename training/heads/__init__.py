"""Classification heads for face-embedding training and their registry.

Every head maps (embeddings (N, D), int64 labels (N,)[, sample indices (N,)]) to logits
(N, C) for ``F.cross_entropy``; see :mod:`training.heads.base` for the shared contract.

>>> head = build_head("arcface", 512, 10_000, s=64.0, m=0.5)
>>> head = build_head("kappaface", 512, 10_000, class_counts=counts, sample_rate=0.1)  # Partial FC
>>> head.hparams()  # -> model card
>>> head = build_sharded_head("arcface", 512, 10_000_000, sample_rate=0.1)  # under torchrun
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from training.heads.arcface import ArcFaceHead
from training.heads.base import ClassifierHead, CosineHead, arc_margin_target
from training.heads.combined import CombinedMarginHead
from training.heads.cosface import CosFaceHead
from training.heads.kappaface import KappaFaceHead
from training.heads.normface import NormFaceHead
from training.heads.partial_fc import PartialFC
from training.heads.sharded_fc import ShardedPartialFC, shard_range
from training.heads.softmax import SoftmaxHead

__all__ = [
    "ArcFaceHead",
    "ClassifierHead",
    "CombinedMarginHead",
    "CosFaceHead",
    "CosineHead",
    "KappaFaceHead",
    "NormFaceHead",
    "PartialFC",
    "ShardedPartialFC",
    "SoftmaxHead",
    "arc_margin_target",
    "build_head",
    "build_sharded_head",
    "list_heads",
    "shard_range",
]

_REGISTRY: dict[str, Callable[..., ClassifierHead]] = {
    "softmax": SoftmaxHead,
    "normface": NormFaceHead,
    "cosface": CosFaceHead,
    "arcface": ArcFaceHead,
    "combined": CombinedMarginHead,
    "kappaface": KappaFaceHead,
}


def list_heads() -> list[str]:
    """Registry names: ``arcface, combined, cosface, kappaface, normface, softmax``."""
    return sorted(_REGISTRY)


def build_head(name: str, embedding_size: int, num_classes: int, **hyper: Any) -> nn.Module:
    """Build head ``name``; ``hyper`` goes to its constructor (``s``, ``m``, ``m1``..``m3``, ...).

    ``sample_rate`` (default 1.0) < 1 wraps the head in :class:`PartialFC`. ``kappaface``
    requires ``class_counts`` (images per class, from the dataset). Every returned module has
    ``hparams()``.
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown head {name!r}; known: {', '.join(list_heads())}")
    sample_rate = float(hyper.pop("sample_rate", 1.0))
    head = _REGISTRY[key](embedding_size, num_classes, **hyper)
    return PartialFC(head, sample_rate) if sample_rate < 1.0 else head


def build_sharded_head(
    name: str, embedding_size: int, num_classes: int, sample_rate: float = 1.0, **hyper: Any
) -> ShardedPartialFC:
    """Head ``name`` holding this rank's contiguous share of the class centres, wrapped in
    :class:`ShardedPartialFC` (needs an initialised process group; the default group's rank
    and world size pick the shard)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("build_sharded_head needs an initialised process group (run under torchrun)")
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise KeyError(f"unknown head {name!r}; known: {', '.join(list_heads())}")
    shard = shard_range(num_classes, dist.get_rank(), dist.get_world_size())
    head = _REGISTRY[key](embedding_size, num_classes, shard=shard, **hyper)
    return ShardedPartialFC(head, sample_rate)

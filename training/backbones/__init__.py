"""Face embedding backbones and their registry.

The training loop, export and the model card refer to a backbone by a short name (``"r50"``,
``"mbf"``), so the name -> constructor map lives here, in one place.

>>> net = get_backbone("r50", embedding_size=512)
>>> params, macs = count_params_flops(net)   # ~43.6 M params, ~6.3 GMACs
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from training.backbones.complexity import count_params, count_params_flops
from training.backbones.iresnet import IResNet, iresnet18, iresnet34, iresnet50, iresnet100
from training.backbones.mobilefacenet import MobileFaceNet, mobilefacenet, mobilefacenet_large

__all__ = [
    "IResNet",
    "MobileFaceNet",
    "canonical_name",
    "count_params",
    "count_params_flops",
    "get_backbone",
    "list_backbones",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "r18": iresnet18,
    "r34": iresnet34,
    "r50": iresnet50,
    "r100": iresnet100,
    "mbf": mobilefacenet,
    "mbf_large": mobilefacenet_large,
}

_ALIASES: dict[str, str] = {
    "iresnet18": "r18",
    "iresnet34": "r34",
    "iresnet50": "r50",
    "iresnet100": "r100",
    "mobilefacenet": "mbf",
    "mobilefacenet_large": "mbf_large",
}


def canonical_name(name: str) -> str:
    """Map an alias (``"iresnet50"``, ``"MobileFaceNet"``) to its registry key (``"r50"``, ``"mbf"``)."""
    key = name.strip().lower().replace("-", "")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    return key


def list_backbones() -> list[str]:
    """Registry keys, e.g. ``["mbf", "mbf_large", "r100", "r18", "r34", "r50"]``."""
    return sorted(_REGISTRY)


def get_backbone(name: str, embedding_size: int = 512, **kw: object) -> nn.Module:
    """Build backbone ``name`` producing ``embedding_size``-d embeddings for 112x112 RGB input.

    Extra keywords go to the constructor: ``fp16`` (both), ``dropout`` and
    ``zero_init_residual`` (IResNet), ``blocks`` and ``scale`` (MobileFaceNet).
    """
    return _REGISTRY[canonical_name(name)](embedding_size=embedding_size, **kw)

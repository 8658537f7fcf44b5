"""A deliberately small CNN for experiments that must run on 2 CPU cores in minutes.

Not a production backbone (those live in ``training/backbones``): it halves the
112x112 crop inside the network, so data, preprocessing and export contracts stay
exactly those of the real models, and costs ~1/30 of MobileFaceNet's MACs.
"""

from __future__ import annotations

import torch
from torch import nn


def _cbp(i: int, o: int, k: int = 3, s: int = 1, g: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o), nn.PReLU(o))


class TinyFaceNet(nn.Module):
    """56x56 internal resolution, depthwise-separable stages 32-64-128, GDC-free linear embedding."""

    def __init__(self, embedding_size: int = 128, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.AvgPool2d(2),  # 112 -> 56
            _cbp(3, w, 3, 2),  # 28
            _cbp(w, w, 3, 1, g=w),
            _cbp(w, 2 * w, 1),
            _cbp(2 * w, 2 * w, 3, 2, g=2 * w),
            _cbp(2 * w, 2 * w, 1),  # 14
            _cbp(2 * w, 2 * w, 3, 1, g=2 * w),
            _cbp(2 * w, 4 * w, 1),
            _cbp(4 * w, 4 * w, 3, 2, g=4 * w),
            _cbp(4 * w, 4 * w, 1),  # 7
        )
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(4 * w * 7 * 7, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))

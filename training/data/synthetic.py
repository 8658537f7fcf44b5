"""Synthetic "faces" for smoke tests: learnable identities with no data on disk.

Each identity is a smooth random colour pattern (a low-resolution prototype
upsampled to 112x112); each sample adds a small random shift, brightness change
and pixel noise. The task is easy enough that a loss that does not fall means a
bug in the loop, not a hard problem. Samples are a pure function of
(seed, index), so any worker produces the same image.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from training.data.base import CropDataset
from training.data.transforms import Augment


class SyntheticFaces(CropDataset):
    def __init__(
        self,
        num_classes: int = 32,
        per_class: int = 8,
        size: int = 112,
        seed: int = 0,
        noise: float = 12.0,
        augment: Augment | None = None,
    ) -> None:
        self.size, self.seed, self.noise = size, seed, noise
        self.augment = augment
        self.labels = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
        rng = np.random.default_rng(seed)
        protos = rng.integers(0, 256, size=(num_classes, 6, 6, 3), dtype=np.uint8)
        self._protos = [cv2.resize(p, (size + 16, size + 16), interpolation=cv2.INTER_CUBIC) for p in protos]

    def load(self, index: int) -> tuple[np.ndarray, int]:
        label = int(self.labels[index])
        rng = np.random.default_rng([self.seed, 1, index])
        dx, dy = rng.integers(0, 17, size=2)
        img = self._protos[label][dy : dy + self.size, dx : dx + self.size].astype(np.float32)
        img = img * rng.uniform(0.8, 1.2) + rng.normal(0, self.noise, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8), label

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["seed"] = self.seed
        return out

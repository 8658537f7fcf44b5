"""Crop augmentation and the crop -> tensor conversion.

The conversion :func:`to_tensor` is the single documented place where training
meets the preprocessing contract: crops are stored and decoded as **BGR uint8**
(what ``cv2.imread`` gives and what the service's aligner produces); the models
see **RGB float32 CHW, (x - 127.5) / 127.5** -- InsightFace's convention, and what
export writes into the model card (``color=RGB, mean=127.5, std=127.5``).

Augmentation runs on uint8 numpy crops with an explicit ``numpy.random.Generator``
so that a sample's augmentation is a function of (seed, epoch, position) and a
resumed run replays exactly the same images whatever the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MEAN = 127.5
STD = 127.5
COLOR = "RGB"


def to_tensor(crop_bgr: np.ndarray) -> torch.Tensor:
    """BGR uint8 (H, W, 3) -> RGB float32 (3, H, W) in [-1, 1]."""
    if crop_bgr.ndim != 3 or crop_bgr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) BGR crop, got {crop_bgr.shape}")
    rgb = np.ascontiguousarray(crop_bgr[:, :, ::-1].transpose(2, 0, 1))
    return (torch.from_numpy(rgb).float() - MEAN) / STD


def to_batch(crops_bgr: list[np.ndarray]) -> torch.Tensor:
    """Stack crops into an (N, 3, H, W) model input."""
    return torch.stack([to_tensor(c) for c in crops_bgr])


@dataclass
class Augment:
    """Horizontal flip (arcface_torch's only augmentation) plus optional colour jitter.

    Jitter is off by default: the arcface_torch recipe uses flip only, and jitter
    mostly helps small data sets with uniform capture conditions.
    """

    flip: bool = True
    brightness: float = 0.0  # +- fraction of 255 added
    contrast: float = 0.0  # +- fraction of scale around the mean
    saturation: float = 0.0  # +- fraction of blend with grey

    def __call__(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = crop
        if self.flip and rng.random() < 0.5:
            out = out[:, ::-1]
        if self.brightness or self.contrast or self.saturation:
            img = out.astype(np.float32)
            if self.saturation:
                grey = img.mean(axis=2, keepdims=True)
                a = 1.0 + rng.uniform(-self.saturation, self.saturation)
                img = grey + a * (img - grey)
            if self.contrast:
                m = img.mean()
                img = m + (1.0 + rng.uniform(-self.contrast, self.contrast)) * (img - m)
            if self.brightness:
                img = img + 255.0 * rng.uniform(-self.brightness, self.brightness)
            out = np.clip(img, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out)


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """Per-sample generator: augmentation depends only on (seed, epoch, position)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, position])

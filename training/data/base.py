"""What every training dataset shares: labels, augmentation keys, concatenation.

A dataset implements ``load(i) -> (bgr_crop, label)`` and exposes ``labels`` (one
int per sample). ``__getitem__`` accepts a plain index (no augmentation) or the
``(index, aug_seed)`` pairs the samplers yield; the seed makes augmentation a pure
function of the sampler's position, which is what lets ``--resume`` replay the
same batches bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.transforms import Augment, to_tensor


class CropDataset(Dataset):
    """Base class: aligned BGR uint8 crops with integer identity labels."""

    labels: np.ndarray
    augment: Augment | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def load(self, index: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def __getitem__(self, key: int | Sequence[int]) -> tuple[torch.Tensor, int, int]:
        if isinstance(key, (tuple, list)):
            index, seed = int(key[0]), int(key[1])
        else:
            index, seed = int(key), None
        crop, label = self.load(index)
        if self.augment is not None and seed is not None:
            crop = self.augment(crop, np.random.default_rng(seed))
        return to_tensor(crop), int(label), index

    def summary(self) -> dict[str, Any]:
        counts = np.bincount(self.labels) if len(self.labels) else np.zeros(0, int)
        counts = counts[counts > 0]
        return {
            "kind": type(self).__name__,
            "images": len(self),
            "identities": int(counts.size),
            "images_per_identity": {
                "min": int(counts.min()) if counts.size else 0,
                "median": float(np.median(counts)) if counts.size else 0.0,
                "max": int(counts.max()) if counts.size else 0,
            },
        }


class ConcatCrops(CropDataset):
    """Several datasets as one, with disjoint label ranges (e.g. real LFW people + synthetic)."""

    def __init__(self, parts: list[CropDataset], augment: Augment | None = None) -> None:
        self.parts = parts
        self.augment = augment
        offsets, starts, labels = [], [], []
        lab_off, start = 0, 0
        for p in parts:
            offsets.append(lab_off)
            starts.append(start)
            labels.append(np.asarray(p.labels, dtype=np.int64) + lab_off)
            lab_off += p.num_classes
            start += len(p)
        self._label_offsets = offsets
        self._starts = np.asarray(starts + [start])
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)

    def load(self, index: int) -> tuple[np.ndarray, int]:
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        crop, label = self.parts[k].load(index - int(self._starts[k]))
        return crop, label + self._label_offsets[k]

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["parts"] = [p.summary() for p in self.parts]
        return out


class Subset(CropDataset):
    """A subset of samples, labels re-numbered densely (for long-tail variants)."""

    def __init__(self, base: CropDataset, indices: np.ndarray, augment: Augment | None = None) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.augment = augment if augment is not None else base.augment
        old = np.asarray(base.labels)[self.indices]
        uniq, self.labels = np.unique(old, return_inverse=True)
        self.labels = self.labels.astype(np.int64)
        self._class_map = dict(zip(uniq.tolist(), range(len(uniq))))

    def load(self, index: int) -> tuple[np.ndarray, int]:
        crop, label = self.base.load(int(self.indices[index]))
        return crop, self._class_map[label]

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["base"] = self.base.summary()
        return out


class InMemory(CropDataset):
    """Decode every crop once and keep it in RAM (small sets on few cores: no JPEG work per epoch).

    lfw112's ~9.5k View 1 training crops take ~360 MB as uint8.
    """

    def __init__(self, base: CropDataset, progress: bool = False) -> None:
        from tqdm import tqdm

        self.base = base
        self.augment = base.augment
        self.labels = np.asarray(base.labels, dtype=np.int64)
        self._crops = [base.load(i)[0] for i in tqdm(range(len(base)), desc="decoding", disable=not progress)]

    def load(self, index: int) -> tuple[np.ndarray, int]:
        return self._crops[index], int(self.labels[index])

    def summary(self) -> dict[str, Any]:
        return self.base.summary()

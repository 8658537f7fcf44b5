"""Samplers: shuffled, class-balanced and long-tail-aware, DDP-sharded and resumable.

All samplers yield ``(index, aug_seed)`` pairs. The order is a pure function of
``(seed, epoch)`` and each position gets its own augmentation seed, so a run that
resumes at step k of epoch e (``set_epoch(e, start=k * batch)``) sees exactly the
batches the uninterrupted run would have seen. With DDP each rank takes every
``world``-th element of the same global order (the DistributedSampler scheme).

Long-tail awareness: ``power`` re-weights how often a class is drawn relative to its
size n_c: sample probability of an image ~ n_c^(-power). ``power=0`` is plain
instance sampling (head classes dominate), ``1`` is class-balanced (every identity
equally often), ``0.5`` is square-root sampling, the usual compromise on long-tailed
face data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class _Base(Sampler):
    def __init__(
        self, n: int, seed: int = 0, rank: int = 0, world: int = 1, num_samples: int | None = None
    ) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        total = num_samples if num_samples is not None else n
        self.total = int(np.ceil(total / world)) * world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order; ``start`` skips that many of this rank's samples (resume)."""
        self.epoch, self.start = int(epoch), int(start)

    def order(self) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.total // self.world - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = self.order()
        if idx.size < self.total:  # pad by wrapping so every rank gets the same count
            idx = np.resize(idx, self.total)
        mine = np.arange(self.rank, self.total, self.world)[self.start :]
        base = (self.seed & 0xFFFF) << 40 | (self.epoch & 0xFFFF) << 24
        for pos in mine:
            yield int(idx[pos]), int(base | int(pos))


class ShuffleSampler(_Base):
    """Every sample once per epoch, in a (seed, epoch)-determined order."""

    def order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)


class ClassAwareSampler(_Base):
    """Draw images with probability ~ n_c^(-power) (with replacement), ``num_samples`` per epoch."""

    def __init__(
        self,
        labels: np.ndarray,
        power: float = 1.0,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        num_samples: int | None = None,
    ) -> None:
        labels = np.asarray(labels)
        super().__init__(len(labels), seed, rank, world, num_samples)
        counts = np.bincount(labels)
        w = counts[labels].astype(np.float64) ** (-power)
        self.p = w / w.sum()
        self.power = power

    def order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        return rng.choice(self.n, size=self.total, replace=True, p=self.p)


def build_sampler(
    labels: np.ndarray,
    kind: str = "shuffle",
    power: float = 0.5,
    seed: int = 0,
    rank: int = 0,
    world: int = 1,
) -> _Base:
    """``shuffle`` | ``balanced`` (power 1) | ``sqrt`` (power 0.5) | ``power`` (given exponent)."""
    if kind == "shuffle":
        return ShuffleSampler(len(labels), seed, rank, world)
    if kind == "balanced":
        return ClassAwareSampler(labels, 1.0, seed, rank, world)
    if kind == "sqrt":
        return ClassAwareSampler(labels, 0.5, seed, rank, world)
    if kind == "power":
        return ClassAwareSampler(labels, power, seed, rank, world)
    raise ValueError(f"unknown sampler {kind!r}")


def zipf_subset(
    labels: np.ndarray, max_per_class: int, exponent: float = 1.0, seed: int = 0, min_per_class: int = 1
) -> np.ndarray:
    """Indices of a long-tailed subset: the r-th largest class keeps ~ max_per_class / r^exponent images.

    Classes are ranked by their real size (largest first, ties broken by a seeded
    shuffle), so the head keeps its many images and the tail is cut hardest; a class
    keeps at most what it has.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    uniq, counts = np.unique(labels, return_counts=True)
    shuffle = rng.permutation(uniq.size)
    classes = uniq[shuffle][np.argsort(-counts[shuffle], kind="stable")]
    keep = []
    for r, c in enumerate(classes, start=1):
        idx = np.flatnonzero(labels == c)
        k = max(min_per_class, round(max_per_class / r**exponent))
        keep.append(rng.permutation(idx)[: min(k, idx.size)])
    return np.sort(np.concatenate(keep))

"""Embedding arrays as the gallery stores and searches them: float32 rows, L2-normalised."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from service.errors import InvalidRequest

IN_CHUNK = 5000  # ids per SQL IN (...) list


def normalise(x: np.ndarray, what: str = "embedding") -> np.ndarray:
    """L2-normalise rows (cosine = inner product); refuse zero or non-finite vectors."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise InvalidRequest(f"{what} must be a (N, D) array", shape=list(x.shape))
    if not np.isfinite(x).all():
        raise InvalidRequest(f"{what} contains NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms < 1e-12).any():
        raise InvalidRequest(f"{what} has a zero vector")
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stored float32 vectors (one bytes blob each) -> an (n, dim) array."""
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), np.float32).reshape(len(blobs), dim)


def chunks(seq: Sequence[Any], n: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]

"""The seam between the gallery and a vector search engine: ids and vectors, nothing else.

An index holds the L2-normalised embeddings of one (collection, model) keyed by face id
and answers top-k inner-product searches. It is derived data: the gallery builds it from
the database and keeps it current through the change log (``changes.py``), so an
implementation needs no persistence of its own to be correct; ``snapshot``/``restore``
only make restarts faster. A second backend is a new subclass, not a branch in the gallery.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np


class VectorIndex(ABC):
    """Top-k inner product over float32 vectors keyed by int64 face ids. Thread-safe."""

    dim: int
    kind: str  # e.g. "flat", "ivf": what /metrics and the logs show
    build_seconds: float = 0.0

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Vectors held."""

    @abstractmethod
    def add(self, ids: np.ndarray, vectors: np.ndarray, *, replace: bool = True) -> None:
        """Add vectors; with ``replace`` an id already present is replaced, not duplicated."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (absent ones are ignored); returns how many were removed."""

    def apply(self, remove_ids: np.ndarray, add_ids: np.ndarray, add_vectors: np.ndarray) -> None:
        """Remove then add. Implementations should make this atomic for concurrent searches,
        so a face being replaced is never briefly missing from results."""
        if len(remove_ids):
            self.remove(remove_ids)
        if len(add_ids):
            self.add(add_ids, add_vectors, replace=True)

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N, k'), ids (N, k')) with k' = min(k, ntotal), best first; id -1 pads.
        Raises :class:`~service.errors.ModelMismatch` on a query of another dimension."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """Every id held, in any order (consistency checks; O(n))."""

    def needs_rebuild(self) -> bool:
        """True when the index should be rebuilt from the database (grew out of its kind)."""
        return False

    def memory_bytes(self) -> int:
        """Approximate resident size (for metrics)."""
        return self.ntotal * (4 * self.dim + 8)

    def snapshot(self, path: Path) -> None:
        """Write the index to ``path`` (hook for faster restarts; optional)."""
        raise NotImplementedError(f"{type(self).__name__} has no snapshots")


#: Builds an index of the right kind for the given (ids, vectors).
IndexFactory = Callable[[np.ndarray, np.ndarray], VectorIndex]

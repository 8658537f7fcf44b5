"""The FAISS implementation of :class:`~service.gallery.vector_index.VectorIndex`, in process.

Kinds
-----
* ``flat`` — ``IndexIDMap2(IndexFlatIP)``: exact cosine search on L2-normalised vectors;
  ids are face ids. Used up to ``index_exact_max`` vectors.
  With ``index_flat_fp16`` the vectors are stored as fp16 (``IndexScalarQuantizer``):
  half the memory and, measured single-threaded at 1M, ~50 ms instead of ~300 ms per
  query, at recall@10 0.9994 (scores differ from exact by ~1e-3).
* ``ivf`` — ``IndexIVFFlat`` (inner product, spherical k-means, nlist ~ 2*sqrt(n)) which
  stores face ids natively. Above ``index_exact_max`` faces. Chosen over HNSW, measured on
  2 cores with face-shaped 512-d data (``bench/identify.py``, 100k faces): IVF builds
  ~5x faster (21 s vs 98 s; at 1M HNSW needs ~15-20 min, too long for the rebuild from
  the DB at start-up this design relies on), and it supports real deletion, where
  ``IndexHNSW`` cannot remove vectors (tombstones would grow until a rebuild). At 1M
  faces HNSW32 (efSearch 512) built in 704 s and found 96 % of the decision-relevant
  neighbours (top identity right for 99.8 % of probes) at p50 4.3 ms; IVF2000 with the
  auto nprobe (200) built in 100 s and found 99.85 % (top identity 100 %) at p50 18 ms,
  p99 28 ms (one search thread, loaded 2-core machine).
  (``IndexIDMap2`` is not used around IVF: its ``remove_ids`` assumes the inner index
  compacts ids the way a flat index does, which IVF does not.)

Concurrency
-----------
Each index has a readers-writer lock: FAISS CPU searches are safe to run concurrently
(and release the GIL), but a search must never overlap an ``add``/``remove``.

GPU
---
When ``index_use_gpu`` and ``faiss.get_num_gpus() > 0`` the CPU index stays the master
copy (all mutations, removals included, which GPU flat indexes lack) and a GPU clone
serves searches; the clone is refreshed lazily after a mutation.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np

from service.errors import ModelMismatch
from service.gallery.vector_index import VectorIndex

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf"]

# Batched flat search only takes the BLAS (sgemm) path from `distance_compute_blas_threshold`
# queries per call (default 20). Single queries are as fast or faster on the SIMD path,
# but micro-batches of a few queries gain several x with BLAS (docs/facts.md: 5-7x at 64).
BLAS_THRESHOLD = 4
faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD


#: IVF lists probed when ``index_ivf_nprobe`` is 0: 10 % of the lists, at least 12.
#: Measured on face-shaped data (bench/identify.py, tests/gallery): face embeddings have a
#: high intrinsic dimension, so a probe and its own enrolled faces (cosine 0.5-0.8) often
#: fall in different lists. 10 % of 632 lists (100k faces) / 2000 lists (1M) finds 99.6 % /
#: 99.85 % of the neighbours that can change an identify decision (cosine >= 0.4) and
#: agrees with exact search on the top identity for every probe; tiny galleries (tens of
#: lists) need a larger share, hence the floor. Strict recall@10 >= 0.99 (near-tied
#: strangers ranked 4-10 included) needs most of the lists, i.e. close to exact search.
IVF_AUTO_NPROBE_FRACTION = 0.1
IVF_AUTO_NPROBE_MIN = 12


@dataclass(frozen=True)
class IndexParams:
    """Index knobs (from :class:`service.config.Settings`)."""

    exact_max: int = 200_000
    approx: Literal["ivf"] = "ivf"
    ivf_nlist: int = 0  # 0 = auto: ~2*sqrt(n), at least 39 training points per list
    ivf_nprobe: int = 0  # 0 = auto: IVF_AUTO_NPROBE_FRACTION of the lists
    use_gpu: bool = False
    search_threads: int = 1  # OpenMP threads per search call, set per calling thread (0 = default)
    flat_fp16: bool = False  # store the "flat" kind as fp16 (half memory, ~6x faster at 1M)

    @classmethod
    def from_settings(cls, s: Any) -> IndexParams:
        return cls(
            exact_max=int(s.index_exact_max),
            approx="ivf",
            ivf_nlist=int(getattr(s, "index_ivf_nlist", 0)),
            ivf_nprobe=int(getattr(s, "index_ivf_nprobe", 0)),
            use_gpu=bool(s.index_use_gpu),
            search_threads=int(getattr(s, "index_search_threads", 1)),
            flat_fp16=bool(getattr(s, "index_flat_fp16", False)),
        )

    def kind_for(self, n: int, current: IndexKind | None = None) -> IndexKind:
        """Index kind for ``n`` vectors, with hysteresis so a gallery hovering at the
        threshold does not flip-flop between kinds (each flip is a full rebuild)."""
        if current == "ivf" and n >= int(self.exact_max * 0.8):
            return "ivf"
        return "flat" if n <= self.exact_max else "ivf"

    def nlist_for(self, n: int) -> int:
        if self.ivf_nlist > 0:
            return max(1, min(self.ivf_nlist, n // 39 or 1))
        return max(1, min(int(2 * math.sqrt(n)), n // 39 or 1))

    def nprobe_for(self, nlist: int) -> int:
        if self.ivf_nprobe > 0:
            return min(self.ivf_nprobe, nlist)
        return max(1, min(nlist, max(IVF_AUTO_NPROBE_MIN, math.ceil(IVF_AUTO_NPROBE_FRACTION * nlist))))


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _as_matrix(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ModelMismatch("embeddings must be a (N, D) array", shape=list(x.shape))
    if dim is not None and x.shape[1] != dim:
        raise ModelMismatch(
            f"embedding dimension {x.shape[1]} does not match the gallery's {dim}",
            expected_dim=dim,
            got_dim=int(x.shape[1]),
        )
    return x


_gpu_resources: Any = None
_gpu_lock = threading.Lock()


def gpu_available(use_gpu: bool) -> bool:
    try:
        return bool(use_gpu) and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # noqa: BLE001 - pragma: no cover - broken GPU driver: fall back to CPU
        return False


def _to_gpu(index: faiss.Index) -> faiss.Index | None:
    global _gpu_resources
    try:
        with _gpu_lock:
            if _gpu_resources is None:
                _gpu_resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(_gpu_resources, 0, index)
    except Exception as e:  # noqa: BLE001 - pragma: no cover - no GPU in CI
        log.warning("faiss GPU clone failed, searching on CPU: %s", e)
        return None


class FaissIndex(VectorIndex):
    """A FAISS index over L2-normalised float32 vectors keyed by int64 face ids."""

    def __init__(self, dim: int, kind: IndexKind, params: IndexParams, index: faiss.Index, trained_n: int):
        self.dim = dim
        self.kind: IndexKind = kind
        self.params = params
        self.trained_n = trained_n
        self._index = index
        self._lock = RWLock()
        self._gpu = gpu_available(params.use_gpu)
        self._gpu_index: faiss.Index | None = None
        self._gpu_dirty = True
        self._gpu_clone_lock = threading.Lock()
        self.built_at = time.time()
        self.build_seconds = 0.0

    # -- construction ----------------------------------------------------------------
    @classmethod
    def build(
        cls, ids: np.ndarray, vectors: np.ndarray, params: IndexParams, dim: int | None = None
    ) -> FaissIndex:
        """Build the right kind of index for ``len(ids)`` vectors."""
        t0 = time.perf_counter()
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        if dim is None:
            if vectors.size == 0:
                raise ValueError("dimension unknown for an empty index")
            dim = int(vectors.shape[1])
        vectors = _as_matrix(vectors, dim) if len(ids) else np.zeros((0, dim), np.float32)
        n = len(ids)
        kind = params.kind_for(n)
        if kind == "flat":
            inner = (
                faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
                if params.flat_fp16
                else faiss.IndexFlatIP(dim)
            )
            index: faiss.Index = faiss.IndexIDMap2(inner)
        else:
            nlist = params.nlist_for(n)
            quantizer = faiss.IndexFlatIP(dim)
            ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.cp.spherical = True  # centroids on the sphere, like the data
            ivf.cp.niter = 12
            # Train on a sample: ~64 points per list is plenty for k-means and keeps a
            # 1M-face start-up rebuild to tens of seconds on 2 cores.
            sample_n = min(n, 64 * nlist)
            rng = np.random.default_rng(0)
            sample = vectors if sample_n == n else vectors[np.sort(rng.choice(n, sample_n, replace=False))]
            ivf.train(sample)
            ivf.own_fields = True
            quantizer.this.disown()  # ivf owns the quantizer now
            index = ivf
        if n:
            index.add_with_ids(vectors, ids)
        out = cls(dim, kind, params, index, trained_n=n)
        out.build_seconds = time.perf_counter() - t0
        return out

    # -- mutation ----------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray, *, replace: bool = True) -> None:
        """Add vectors; with ``replace`` an id already present is replaced, not duplicated."""
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        if not len(ids):
            return
        vectors = _as_matrix(vectors, self.dim)
        with self._lock.write():
            removed = 0
            if replace and self._index.ntotal:
                removed = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
            self._index.add_with_ids(vectors, ids)
            if self._gpu_index is not None and not self._gpu_dirty and not removed:
                self._gpu_index.add_with_ids(vectors, ids)  # GPU indexes can add, not remove
            else:
                self._gpu_dirty = True

    def apply(self, remove_ids: np.ndarray, add_ids: np.ndarray, add_vectors: np.ndarray) -> None:
        """Remove ``remove_ids`` then add vectors, atomically for readers (one write lock),
        so a face being replaced is never briefly missing from search results."""
        remove_ids = np.ascontiguousarray(np.asarray(remove_ids, dtype=np.int64))
        add_ids = np.ascontiguousarray(np.asarray(add_ids, dtype=np.int64))
        vectors = _as_matrix(add_vectors, self.dim) if len(add_ids) else None
        with self._lock.write():
            if len(remove_ids) and self._index.ntotal:
                self._index.remove_ids(faiss.IDSelectorBatch(remove_ids))
            if vectors is not None:
                self._index.add_with_ids(vectors, add_ids)
            self._gpu_dirty = True

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
        if not len(ids) or not self._index.ntotal:
            return 0
        with self._lock.write():
            removed = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
            self._gpu_dirty = True
        return removed

    # -- queries -------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def needs_rebuild(self) -> bool:
        """True when the gallery outgrew (or shrank below) what this index was built for."""
        n = self.ntotal
        if self.params.kind_for(n, self.kind) != self.kind:
            return True
        if self.kind == "ivf" and self.params.ivf_nlist <= 0:
            return n > 4 * self.trained_n or n < self.trained_n / 4
        return False

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products; returns (scores (N,k'), ids (N,k')), k' = min(k, ntotal).

        Raises :class:`ModelMismatch` if the query dimension differs from the index's.
        """
        q = _as_matrix(queries, self.dim)
        if self.params.search_threads > 0:
            # OpenMP's thread count is per calling thread: this request thread only. With
            # 2 threads per search, concurrent requests (and onnxruntime's own threads)
            # oversubscribe a small machine and OpenMP barriers turn 2 ms into 50-100 ms.
            faiss.omp_set_num_threads(self.params.search_threads)
        with self._lock.read():
            n = self._index.ntotal
            k_eff = min(int(k), n)
            if k_eff <= 0:
                return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            index = self._search_index()
            if self.kind == "ivf" and index is self._index:
                # per-call parameters: no shared mutable nprobe between concurrent readers
                params = faiss.SearchParametersIVF(nprobe=self.params.nprobe_for(self._index.nlist))
                scores, ids = index.search(q, k_eff, params=params)
            else:  # flat, or the GPU clone (nprobe was set on it when it was cloned)
                scores, ids = index.search(q, k_eff)
        return scores, ids

    def _search_index(self) -> faiss.Index:
        if not self._gpu:
            return self._index
        with self._gpu_clone_lock:  # several readers may find the clone stale at once
            if self._gpu_dirty or self._gpu_index is None:
                self._gpu_index = _to_gpu(self._index)
                if self._gpu_index is not None and self.kind == "ivf":
                    try:  # GPU indexes take no per-call SearchParameters
                        faiss.GpuParameterSpace().set_index_parameter(
                            self._gpu_index, "nprobe", self.params.nprobe_for(self._index.nlist)
                        )
                    except Exception:  # noqa: BLE001 - pragma: no cover - no GPU in CI
                        log.warning("cannot set nprobe on the GPU index; searching on CPU")
                        self._gpu_index = None
                self._gpu_dirty = False
        return self._gpu_index if self._gpu_index is not None else self._index

    def ids(self) -> np.ndarray:
        """All ids in the index (for consistency checks and tests; O(n))."""
        with self._lock.read():
            if self.kind == "flat":
                return faiss.vector_to_array(self._index.id_map).astype(np.int64)
            ivf = self._index
            invlists = ivf.invlists
            out = []
            for list_no in range(ivf.nlist):
                size = invlists.list_size(list_no)
                if size:
                    out.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
            return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def memory_bytes(self) -> int:
        """Approximate resident size of the vectors (for metrics)."""
        per = 4 * self.dim + 8
        extra = self.params.nlist_for(self.trained_n) * 4 * self.dim if self.kind == "ivf" else 0
        return self.ntotal * per + extra

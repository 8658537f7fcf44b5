"""Synthetic embeddings shaped like real face embeddings, for tests and benchmarks.

Uniform random vectors make every approximate index look terrible and a few
well-separated blobs make IVF look perfect (docs/facts.md); real galleries are neither.
Here:

* identity centres are drawn from an anisotropic Gaussian (power-law spectrum, effective
  dimension ~ 60-100) so different people have cosine ~ 0 +- 0.1 with real structure,
  like impostor scores of an ArcFace-type model;
* each face = normalise(a * centre + sqrt(1 - a^2) * noise) with a ~ U(0.72, 0.92), so
  two faces of one person have cosine ~ a1*a2 ~ 0.5-0.85, the genuine range of a real
  recognizer on unconstrained photos.

numpy only; no effect on the service at run time.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=8)
def _rotation(dim: int) -> np.ndarray:
    q = np.linalg.qr(np.random.default_rng(12345).standard_normal((dim, dim)))[0]
    return q.astype(np.float32)


def identity_centres(n: int, dim: int = 512, *, seed: int = 0, alpha: float = 0.6) -> np.ndarray:
    """``n`` unit identity centres with an anisotropic spectrum (eigenvalue_i ~ i^-alpha)."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, dim + 1, dtype=np.float32) ** (-alpha / 2)).astype(np.float32)
    rot = _rotation(dim)  # real embeddings' principal axes are not the coordinate axes
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 65536):
        g = rng.standard_normal((min(65536, n - i), dim), dtype=np.float32) * scale
        out[i : i + len(g)] = _unit(g @ rot)
    return out


def faces_of(
    centres: np.ndarray,
    owners: np.ndarray,
    *,
    seed: int = 1,
    a_low: float = 0.72,
    a_high: float = 0.92,
) -> np.ndarray:
    """One face embedding per entry of ``owners`` (indices into ``centres``)."""
    rng = np.random.default_rng(seed)
    n, dim = len(owners), centres.shape[1]
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 65536):
        o = owners[i : i + 65536]
        a = rng.uniform(a_low, a_high, size=(len(o), 1)).astype(np.float32)
        noise = _unit(rng.standard_normal((len(o), dim), dtype=np.float32))
        c = centres[o]
        # make the noise orthogonal to the centre so cos(face, centre) == a exactly
        noise = _unit(noise - np.sum(noise * c, axis=1, keepdims=True) * c)
        out[i : i + len(o)] = _unit(a * c + np.sqrt(1 - a * a) * noise)
    return out


def gallery(
    n_faces: int, dim: int = 512, *, faces_per_identity: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centres, owners, faces): ``n_faces`` faces of ``n_faces // faces_per_identity`` people."""
    n_ids = max(1, n_faces // faces_per_identity)
    centres = identity_centres(n_ids, dim, seed=seed)
    owners = np.arange(n_faces) % n_ids
    return centres, owners, faces_of(centres, owners, seed=seed + 1)


def probes(
    centres: np.ndarray, n: int, *, seed: int = 2, impostor_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(queries, owners): new photos of enrolled people; a fraction of strangers (owner -1)."""
    rng = np.random.default_rng(seed)
    owners = rng.integers(0, len(centres), size=n)
    q = faces_of(centres, owners, seed=seed + 1)
    n_imp = int(round(n * impostor_fraction))
    if n_imp:
        strangers = identity_centres(n_imp, centres.shape[1], seed=seed + 7919)
        q[:n_imp] = faces_of(strangers, np.arange(n_imp), seed=seed + 3)
        owners[:n_imp] = -1
    return q, owners

"""Plain, immutable records the gallery returns (never ORM objects).

Returning detached dataclasses keeps SQLAlchemy sessions out of the API layer: a record
can be serialised, cached or passed across threads without lazy-loading surprises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

__all__ = ["Collection", "EnrollFace", "FaceHit", "FaceRecord", "GallerySize", "Identity", "Job", "JobStatus", "Page"]

JobStatus = Literal["queued", "running", "done", "failed"]


@dataclass(frozen=True)
class Collection:
    """A gallery: a tenant, a site, a watch list. Its ``model`` made every embedding in it."""

    id: str
    name: str
    model: str
    metadata: dict[str, Any]
    created_at: datetime
    identities: int | None = None  # filled by get_collection / list_collections
    faces: int | None = None


@dataclass(frozen=True)
class Identity:
    """A person of a collection, known to the client by ``external_id``."""

    id: str
    collection_id: str
    external_id: str
    name: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    faces: int | None = None  # number of faces, filled by get_identity / list_identities


@dataclass(frozen=True)
class Page:
    """One page of a keyset-paginated listing; pass ``next_cursor`` back to get the next."""

    items: list[Any]
    next_cursor: str | None


@dataclass
class EnrollFace:
    """One face to enroll, as produced by detect -> align -> embed.

    ``crop`` is the aligned crop (112x112 BGR uint8 array, or PNG bytes as-is); it is
    stored so a model switch can re-embed without the original upload. ``embedding``
    must be L2-normalised float32 from ``model``.
    """

    crop: np.ndarray | bytes
    embedding: np.ndarray
    model: str
    bbox: list[float] | None = None
    landmarks: list[list[float]] | None = None
    det_score: float | None = None
    quality: dict[str, Any] | None = None
    image_sha256: str | None = None


@dataclass(frozen=True)
class FaceRecord:
    """A stored face: where it was found in its photo, its quality and which models embedded it."""

    id: int
    identity_id: str
    collection_id: str
    bbox: list[float] | None
    landmarks: list[list[float]] | None
    det_score: float | None
    quality: dict[str, Any] | None
    image_sha256: str | None
    created_at: datetime
    models: tuple[str, ...] = ()  # models that have an embedding of this face


@dataclass(frozen=True)
class FaceHit:
    """One nearest stored face of a query, joined with its identity (a search result)."""

    face_id: int
    identity_id: str
    external_id: str
    name: str
    score: float  # cosine similarity to the query


@dataclass(frozen=True)
class Job:
    """A background job (a model switch) and its progress."""

    id: str
    kind: str
    collection_id: str
    params: dict[str, Any]
    status: JobStatus
    done: int
    total: int
    error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class GallerySize:
    """Counts for the metrics endpoint."""

    collections: int
    identities: int
    faces: int
    per_collection: dict[str, dict[str, int]] = field(default_factory=dict)  # id -> {identities, faces}
    indexed: dict[str, int] = field(default_factory=dict)  # "collection/model" -> vectors in the index

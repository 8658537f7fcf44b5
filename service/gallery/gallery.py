"""The gallery facade: the one class the API talks to for collections, identities,
faces, identification, API keys and model-switch jobs.

Consistency model
-----------------
* The database is the source of truth. Every write is one transaction; a call returns
  only after it committed, and any database failure rolls it back completely and is
  raised as :class:`~service.errors.StorageUnavailable` (HTTP 503).
* FAISS indexes (one per (collection, model)) are derived caches, built lazily from the
  database on first use and updated *after* each commit.
* Every write that changes which embeddings exist bumps ``collections.revision`` (a row
  lock: such writes are serialised per collection, across processes too) and records the
  touched face ids in ``index_log`` under that revision. Before searching, a process
  compares its index's revision with the database's and replays the log if it is behind.
  So an enroll committed by another worker or replica, or one whose in-process index
  update never happened (a crash between commit and update), is found on the next
  identify; and an index entry can only exist for a committed row, because indexes are
  built from and replayed against committed rows only. Candidate faces are also joined
  with their rows when results are assembled, so a face deleted a moment ago is never
  returned.

Typical use::

    g = Gallery(settings); g.start()
    g.create_collection("staff", "Staff", model="sface-2021dec-int8bq")
    who = g.create_identity("staff", external_id="E-1001", name="Ada")
    g.enroll("staff", who.id, [EnrollFace(crop=crop, embedding=emb, model="sface-2021dec-int8bq")])
    [result] = g.identify("staff", "sface-2021dec-int8bq", emb[None, :], top_k=5, threshold=0.36)
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, defer

from service.errors import (
    CollectionNotFound,
    Conflict,
    FaceNotFound,
    IdentityNotFound,
    InvalidRequest,
    JobNotFound,
    ModelMismatch,
    NotFound,
    StorageUnavailable,
)
from service.gallery.db import WRITE_OPTION, erase_deleted, make_engine, mapped_errors, migrate
from service.gallery.index import IndexParams, VectorIndex
from service.gallery.models import (
    ApiKeyRow,
    CollectionRow,
    EmbeddingRow,
    FaceRow,
    IdentityRow,
    IndexLogRow,
    JobRow,
    utcnow,
)
from service.gallery.records import (
    Aggregate,
    ApiKey,
    Collection,
    EnrollFace,
    Face,
    GallerySize,
    IdentifyResult,
    Identity,
    Job,
    Match,
    Page,
)

log = logging.getLogger(__name__)

COLLECTION_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
MAX_EXTERNAL_ID = 256
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: ``embed_fn`` for re-embedding: BGR uint8 crops -> (N, D) float32 embeddings.
EmbedFn = Callable[[list[np.ndarray]], np.ndarray]

_LOG_PRUNE_EVERY = 1024  # revisions between prunes of index_log
_LOG_KEEP = 8192  # revisions of index_log kept; a process further behind rebuilds
_IN_CHUNK = 5000  # ids per IN (...) list
_JOB_STALE = timedelta(minutes=5)  # a "running" job not updated for this long is dead


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def _normalise(x: np.ndarray, what: str = "embedding") -> np.ndarray:
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


def _chunks(seq: Sequence[Any], n: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def encode_crop(crop: np.ndarray | bytes) -> bytes:
    """Aligned crop -> PNG bytes (lossless, so a re-embed sees exactly what was enrolled)."""
    if isinstance(crop, (bytes, bytearray, memoryview)):
        data = bytes(crop)
        if not data.startswith(PNG_SIGNATURE):
            raise InvalidRequest("crop bytes must be a PNG image")
        return data
    arr = np.asarray(crop)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise InvalidRequest("crop must be an HxW or HxWx3 uint8 (BGR) array", shape=list(arr.shape))
    import cv2  # lazy: only enroll/re-embed need it

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise InvalidRequest("crop could not be encoded as PNG")
    return buf.tobytes()


def decode_crop(data: bytes) -> np.ndarray:
    """PNG bytes -> BGR uint8 array (what the recognizer pipeline takes)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise InvalidRequest("stored crop cannot be decoded")
    return img


def _encode_cursor(created_at: datetime, ident: str) -> str:
    raw = json.dumps([_aware(created_at).isoformat(), ident]).encode()  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, ident = json.loads(raw)
        return datetime.fromisoformat(ts), str(ident)
    except Exception as e:
        raise InvalidRequest("invalid cursor") from e


@dataclass
class _Slot:
    """In-memory FAISS state of one (collection, model)."""

    epoch: datetime | None = None  # the collection's created_at: a re-created collection is new
    index: VectorIndex | None = None  # None until the first vector (dimension unknown)
    revision: int = -1  # -1 = never built
    mutex: threading.RLock = field(default_factory=threading.RLock)  # build/sync/apply
    rebuilding: bool = False


class Gallery:
    """Facade over the gallery database and its FAISS indexes. Thread-safe.

    Create one per process, call :meth:`start` once (runs migrations), share it between
    request handlers, :meth:`close` on shutdown.
    """

    def __init__(self, settings: Any, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.params = IndexParams.from_settings(settings)
        self.oversample = int(getattr(settings, "index_oversample", 4))
        self._engine_arg = engine
        self._engine: Engine | None = None
        self._wengine: Engine | None = None
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._slots_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, warm: bool = False) -> Gallery:
        """Open the database, migrate it to ``head``, recover jobs left by a crash.

        Indexes are built lazily on first use; ``warm=True`` builds every collection's
        active-model index now (slower start, no first-request latency).
        """
        if self._engine is not None:
            return self
        with mapped_errors():
            engine = self._engine_arg or make_engine(
                self.settings.resolved_database_url,
                sqlite_busy_timeout_ms=self.settings.sqlite_busy_timeout_ms,
                sqlite_synchronous=getattr(self.settings, "sqlite_synchronous", "FULL"),
            )
        migrate(engine)
        self._engine = engine
        self._wengine = engine.execution_options(**{WRITE_OPTION: True})
        self._recover_jobs()
        if warm:
            for c in self.list_collections(counts=False):
                self._index_for(c.id, c.model)
        return self

    def close(self) -> None:
        """Wait for background jobs briefly and release the database connections."""
        for t in self._threads:
            t.join(timeout=5)
        with self._slots_lock:
            self._slots.clear()
        if self._engine is not None and self._engine_arg is None:
            self._engine.dispose()
        self._engine = self._wengine = None

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for background index rebuilds and re-embed threads; True if all finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._threads):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        return not self._threads

    def __enter__(self) -> Gallery:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("Gallery.start() has not been called")
        return self._engine

    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction; commits on success, rolls back on any error (then maps it)."""
        if self._engine is None:
            raise RuntimeError("Gallery.start() has not been called")
        bind = self._wengine if write else self._engine
        with mapped_errors(), Session(bind=bind, expire_on_commit=False) as s, s.begin():
            yield s

    # ------------------------------------------------------------------ collections
    def create_collection(
        self,
        collection_id: str,
        name: str = "",
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Collection:
        """Create a collection; ``model`` (default: the configured recognizer) is the
        only model whose embeddings it accepts until a switch. Conflict if the id exists."""
        if not isinstance(collection_id, str) or not COLLECTION_ID_RE.match(collection_id):
            raise InvalidRequest(
                "collection id must match [a-z0-9_-]{1,64}", collection_id=str(collection_id)
            )
        model = model or self.settings.recognizer
        with self._tx(write=True) as s:
            if s.get(CollectionRow, collection_id) is not None:
                raise Conflict("collection already exists", collection_id=collection_id)
            row = CollectionRow(
                id=collection_id,
                name=name or "",
                model=model,
                meta=dict(metadata or {}),
                revision=0,
                created_at=utcnow(),
            )
            s.add(row)
        self._drop_slots(collection_id)
        return self._collection_record(row, 0, 0)

    def get_collection(self, collection_id: str) -> Collection:
        with self._tx() as s:
            row = s.get(CollectionRow, collection_id)
            if row is None:
                raise CollectionNotFound(collection_id=collection_id)
            n_id = s.scalar(sa.select(sa.func.count()).where(IdentityRow.collection_id == collection_id))
            n_f = s.scalar(sa.select(sa.func.count()).where(FaceRow.collection_id == collection_id))
            return self._collection_record(row, n_id or 0, n_f or 0)

    def list_collections(self, *, counts: bool = True) -> list[Collection]:
        """All collections ordered by id, with identity and face counts."""
        with self._tx() as s:
            rows = s.scalars(sa.select(CollectionRow).order_by(CollectionRow.id)).all()
            if not counts:
                return [self._collection_record(r) for r in rows]
            ids, faces = self._counts_by_collection(s)
            return [self._collection_record(r, ids.get(r.id, 0), faces.get(r.id, 0)) for r in rows]

    def update_collection(
        self, collection_id: str, *, name: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Collection:
        """Change the display name and/or replace the metadata (the model changes only by a switch)."""
        with self._tx(write=True) as s:
            row = s.get(CollectionRow, collection_id)
            if row is None:
                raise CollectionNotFound(collection_id=collection_id)
            if name is not None:
                row.name = name
            if metadata is not None:
                row.meta = dict(metadata)
        return self.get_collection(collection_id)

    def delete_collection(self, collection_id: str) -> None:
        """Delete a collection with all its identities, faces, embeddings and jobs."""
        with self._tx(write=True) as s:
            if s.get(CollectionRow, collection_id) is None:
                raise CollectionNotFound(collection_id=collection_id)
            # Explicit deletes (children first) rather than relying on ON DELETE CASCADE
            # alone: it keeps the statement count small and works whatever the FK pragma.
            face_ids = sa.select(FaceRow.id).where(FaceRow.collection_id == collection_id)
            s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id.in_(face_ids)))
            for model in (FaceRow, IdentityRow, IndexLogRow, JobRow):
                s.execute(sa.delete(model).where(model.collection_id == collection_id))
            s.execute(sa.delete(CollectionRow).where(CollectionRow.id == collection_id))
        self._drop_slots(collection_id)
        erase_deleted(self.engine)

    @staticmethod
    def _collection_record(r: CollectionRow, n_id: int | None = None, n_f: int | None = None) -> Collection:
        return Collection(
            id=r.id,
            name=r.name,
            model=r.model,
            metadata=dict(r.meta or {}),
            created_at=_aware(r.created_at),  # type: ignore[arg-type]
            identities=n_id,
            faces=n_f,
        )

    # ------------------------------------------------------------------ identities
    def create_identity(
        self,
        collection_id: str,
        external_id: str,
        name: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> Identity:
        """Create a person. ``external_id`` (any unicode, 1-256 chars) is unique per collection."""
        self._check_external_id(external_id)
        now = utcnow()
        with self._tx(write=True) as s:
            if s.get(CollectionRow, collection_id) is None:
                raise CollectionNotFound(collection_id=collection_id)
            dup = s.scalar(
                sa.select(IdentityRow.id).where(
                    IdentityRow.collection_id == collection_id, IdentityRow.external_id == external_id
                )
            )
            if dup is not None:
                raise Conflict("external_id already exists in this collection", identity_id=dup)
            row = IdentityRow(
                id=uuid.uuid4().hex,
                collection_id=collection_id,
                external_id=external_id,
                name=name or "",
                meta=dict(metadata or {}),
                created_at=now,
                updated_at=now,
            )
            s.add(row)
        return self._identity_record(row, 0)

    def get_identity(self, collection_id: str, identity_id: str) -> Identity:
        with self._tx() as s:
            row = self._identity_row(s, collection_id, identity_id)
            n = s.scalar(sa.select(sa.func.count()).where(FaceRow.identity_id == identity_id))
            return self._identity_record(row, n or 0)

    def get_identity_by_external_id(self, collection_id: str, external_id: str) -> Identity:
        with self._tx() as s:
            row = s.scalar(
                sa.select(IdentityRow).where(
                    IdentityRow.collection_id == collection_id, IdentityRow.external_id == external_id
                )
            )
            if row is None:
                self._require_collection(s, collection_id)
                raise IdentityNotFound(external_id=external_id)
            n = s.scalar(sa.select(sa.func.count()).where(FaceRow.identity_id == row.id))
            return self._identity_record(row, n or 0)

    def list_identities(self, collection_id: str, limit: int = 100, cursor: str | None = None) -> Page:
        """A page of identities in creation order (keyset pagination: stable under
        concurrent inserts and deletes, O(limit) at any depth). ``Page.items`` are
        :class:`Identity`; pass ``Page.next_cursor`` to get the next page (None = last)."""
        if not 1 <= int(limit) <= 1000:
            raise InvalidRequest("limit must be between 1 and 1000")
        with self._tx() as s:
            self._require_collection(s, collection_id)
            q = sa.select(IdentityRow).where(IdentityRow.collection_id == collection_id)
            if cursor:
                ts, last = _decode_cursor(cursor)
                q = q.where(
                    sa.or_(
                        IdentityRow.created_at > ts,
                        sa.and_(IdentityRow.created_at == ts, IdentityRow.id > last),
                    )
                )
            rows = s.scalars(q.order_by(IdentityRow.created_at, IdentityRow.id).limit(int(limit) + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            counts = (
                dict(
                    s.execute(
                        sa.select(FaceRow.identity_id, sa.func.count())
                        .where(FaceRow.identity_id.in_([r.id for r in rows]))
                        .group_by(FaceRow.identity_id)
                    ).all()
                )
                if rows
                else {}
            )
            items = [self._identity_record(r, counts.get(r.id, 0)) for r in rows]
        nxt = _encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return Page(items=items, next_cursor=nxt)

    def update_identity(
        self,
        collection_id: str,
        identity_id: str,
        *,
        external_id: str | None = None,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Identity:
        """Change external id, name and/or replace metadata (None = leave as is)."""
        if external_id is not None:
            self._check_external_id(external_id)
        with self._tx(write=True) as s:
            row = self._identity_row(s, collection_id, identity_id)
            if external_id is not None and external_id != row.external_id:
                dup = s.scalar(
                    sa.select(IdentityRow.id).where(
                        IdentityRow.collection_id == collection_id, IdentityRow.external_id == external_id
                    )
                )
                if dup is not None:
                    raise Conflict("external_id already exists in this collection", identity_id=dup)
                row.external_id = external_id
            if name is not None:
                row.name = name
            if metadata is not None:
                row.meta = dict(metadata)
            row.updated_at = utcnow()
        return self.get_identity(collection_id, identity_id)

    def delete_identity(self, collection_id: str, identity_id: str) -> int:
        """Delete an identity with its faces and embeddings; returns the number of faces
        removed. Its faces leave the index before this returns."""
        with self._tx(write=True) as s:
            rev = self._bump(s, collection_id)[0]
            self._identity_row(s, collection_id, identity_id)
            face_ids = list(s.scalars(sa.select(FaceRow.id).where(FaceRow.identity_id == identity_id)))
            self._log(s, collection_id, rev, face_ids, "d")
            if face_ids:
                for chunk in _chunks(face_ids):
                    s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id.in_(chunk)))
                s.execute(sa.delete(FaceRow).where(FaceRow.identity_id == identity_id))
            s.execute(sa.delete(IdentityRow).where(IdentityRow.id == identity_id))
        self._after_write(collection_id, rev, removed=face_ids)
        erase_deleted(self.engine)
        return len(face_ids)

    @staticmethod
    def _check_external_id(external_id: str) -> None:
        if not isinstance(external_id, str) or not 1 <= len(external_id) <= MAX_EXTERNAL_ID:
            raise InvalidRequest(f"external_id must be a string of 1-{MAX_EXTERNAL_ID} characters")

    @staticmethod
    def _require_collection(s: Session, collection_id: str) -> CollectionRow:
        row = s.get(CollectionRow, collection_id)
        if row is None:
            raise CollectionNotFound(collection_id=collection_id)
        return row

    def _identity_row(self, s: Session, collection_id: str, identity_id: str) -> IdentityRow:
        row = s.get(IdentityRow, identity_id)
        if row is None or row.collection_id != collection_id:
            self._require_collection(s, collection_id)
            raise IdentityNotFound(identity_id=identity_id)
        return row

    @staticmethod
    def _identity_record(r: IdentityRow, faces: int | None = None) -> Identity:
        return Identity(
            id=r.id,
            collection_id=r.collection_id,
            external_id=r.external_id,
            name=r.name,
            metadata=dict(r.meta or {}),
            created_at=_aware(r.created_at),  # type: ignore[arg-type]
            updated_at=_aware(r.updated_at),  # type: ignore[arg-type]
            faces=faces,
        )

    # ------------------------------------------------------------------ faces
    def enroll(self, collection_id: str, identity_id: str, faces: Sequence[EnrollFace]) -> list[Face]:
        """Store faces (crop, metadata, embedding) of an identity in one transaction.

        Returns the face records once committed; the index is updated right after.
        Raises ModelMismatch if an embedding's model is not the collection's active
        model or its dimension differs from the embeddings already stored for it.
        """
        if not faces:
            raise InvalidRequest("no faces to enroll")
        models = {f.model for f in faces}
        vecs = _normalise(np.stack([np.asarray(f.embedding, np.float32).ravel() for f in faces]))
        pngs = [encode_crop(f.crop) for f in faces]  # outside the transaction: CPU work
        dim = int(vecs.shape[1])
        now = utcnow()
        with self._tx(write=True) as s:
            rev, active, _ = self._bump(s, collection_id)
            if models != {active}:
                raise ModelMismatch(
                    "embeddings must come from the collection's active model",
                    active_model=active,
                    got=sorted(models),
                )
            self._identity_row(s, collection_id, identity_id)
            stored_dim = self._stored_dim(s, collection_id, active)
            if stored_dim is not None and stored_dim != dim:
                raise ModelMismatch(
                    f"embedding dimension {dim} differs from the collection's {stored_dim}",
                    expected_dim=stored_dim,
                    got_dim=dim,
                )
            rows = [
                FaceRow(
                    identity_id=identity_id,
                    collection_id=collection_id,
                    crop_png=png,
                    bbox=[float(v) for v in f.bbox] if f.bbox is not None else None,
                    landmarks=[[float(a) for a in p] for p in f.landmarks]
                    if f.landmarks is not None
                    else None,
                    det_score=float(f.det_score) if f.det_score is not None else None,
                    quality=dict(f.quality) if f.quality is not None else None,
                    image_sha256=f.image_sha256,
                    created_at=now,
                )
                for f, png in zip(faces, pngs)
            ]
            s.add_all(rows)
            s.flush()  # assigns face ids (= FAISS ids)
            s.add_all(
                EmbeddingRow(face_id=r.id, model=active, dim=dim, vector=v.tobytes())
                for r, v in zip(rows, vecs)
            )
            self._log(s, collection_id, rev, [r.id for r in rows], "a")
            s.execute(sa.update(IdentityRow).where(IdentityRow.id == identity_id).values(updated_at=now))
        ids = np.array([r.id for r in rows], np.int64)
        self._after_write(collection_id, rev, added=(active, ids, vecs))
        return [self._face_record(r, (active,)) for r in rows]

    def list_faces(self, collection_id: str, identity_id: str) -> list[Face]:
        """Faces of an identity, oldest first (crops are not loaded; see get_face_crop)."""
        with self._tx() as s:
            self._identity_row(s, collection_id, identity_id)
            rows = (
                s.execute(
                    sa.select(FaceRow)
                    .options(defer(FaceRow.crop_png))
                    .where(FaceRow.identity_id == identity_id)
                    .order_by(FaceRow.id)
                )
                .scalars()
                .all()
            )
            models = self._face_models(s, [r.id for r in rows])
            return [self._face_record(r, models.get(r.id, ())) for r in rows]

    def get_face(self, collection_id: str, face_id: int) -> Face:
        with self._tx() as s:
            row = self._face_row(s, collection_id, face_id)
            return self._face_record(row, self._face_models(s, [row.id]).get(row.id, ()))

    def get_face_crop(self, collection_id: str, face_id: int) -> bytes:
        """The stored aligned crop as PNG bytes."""
        with self._tx() as s:
            return bytes(self._face_row(s, collection_id, face_id).crop_png)

    def delete_face(self, collection_id: str, face_id: int) -> None:
        """Delete one face and its embeddings; it leaves the index before this returns."""
        with self._tx(write=True) as s:
            rev = self._bump(s, collection_id)[0]
            self._face_row(s, collection_id, face_id)
            self._log(s, collection_id, rev, [int(face_id)], "d")
            s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id == int(face_id)))
            s.execute(sa.delete(FaceRow).where(FaceRow.id == int(face_id)))
        self._after_write(collection_id, rev, removed=[int(face_id)])
        erase_deleted(self.engine)

    def _face_row(self, s: Session, collection_id: str, face_id: int) -> FaceRow:
        try:
            fid = int(face_id)
        except (TypeError, ValueError) as e:
            raise FaceNotFound(face_id=str(face_id)) from e
        row = s.get(FaceRow, fid)
        if row is None or row.collection_id != collection_id:
            self._require_collection(s, collection_id)
            raise FaceNotFound(face_id=fid)
        return row

    @staticmethod
    def _face_models(s: Session, face_ids: list[int]) -> dict[int, tuple[str, ...]]:
        out: dict[int, list[str]] = defaultdict(list)
        for chunk in _chunks(face_ids):
            for fid, model in s.execute(
                sa.select(EmbeddingRow.face_id, EmbeddingRow.model)
                .where(EmbeddingRow.face_id.in_(chunk))
                .order_by(EmbeddingRow.model)
            ):
                out[fid].append(model)
        return {k: tuple(v) for k, v in out.items()}

    @staticmethod
    def _face_record(r: FaceRow, models: tuple[str, ...] = ()) -> Face:
        return Face(
            id=int(r.id),
            identity_id=r.identity_id,
            collection_id=r.collection_id,
            bbox=r.bbox,
            landmarks=r.landmarks,
            det_score=r.det_score,
            quality=r.quality,
            image_sha256=r.image_sha256,
            created_at=_aware(r.created_at),  # type: ignore[arg-type]
            models=tuple(models),
        )

    @staticmethod
    def _stored_dim(s: Session, collection_id: str, model: str) -> int | None:
        return s.scalar(
            sa.select(EmbeddingRow.dim)
            .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
            .where(FaceRow.collection_id == collection_id, EmbeddingRow.model == model)
            .limit(1)
        )

    # ------------------------------------------------------------------ identify / verify
    def identify(
        self,
        collection_id: str,
        model: str,
        queries: np.ndarray,
        top_k: int = 5,
        aggregate: Aggregate = "max",
        threshold: float | None = None,
        oversample: int | None = None,
    ) -> list[IdentifyResult]:
        """Rank identities for each query embedding (rows of ``queries``, (N, D) or (D,)).

        Searches ``top_k * oversample`` nearest faces, groups them by identity and scores
        each identity by its best face (``max``) or by the mean similarity over all its
        faces (``mean``, computed exactly from the stored embeddings of the candidate
        identities). ``unknown`` is True when there is no candidate or the best score
        is below ``threshold`` (the caller's, e.g. the model card's at the FAR target).
        Raises ModelMismatch if ``model`` is not the collection's active model or the
        query dimension differs from the gallery's.
        """
        if aggregate not in ("max", "mean"):
            raise InvalidRequest("aggregate must be 'max' or 'mean'")
        if not 1 <= int(top_k) <= 1000:
            raise InvalidRequest("top_k must be between 1 and 1000")
        q = _normalise(queries, "query")
        with self._tx() as s:
            coll = self._require_collection(s, collection_id)
            active, revision, epoch = coll.model, coll.revision, coll.created_at
        if model != active:
            raise ModelMismatch(
                "query model differs from the collection's active model", active_model=active, got=model
            )
        index = self._index_for(collection_id, active, revision, epoch)
        empty = IdentifyResult(matches=[], best_score=None, unknown=True, threshold=threshold)
        if index is None or index.ntotal == 0:
            return [empty for _ in range(len(q))]
        k_faces = int(top_k) * max(1, int(oversample or self.oversample))
        scores, ids = index.search(q, k_faces)  # ModelMismatch on a wrong dimension

        cand = np.unique(ids[ids >= 0]).tolist()
        info: dict[int, tuple[str, str, str]] = {}
        means: dict[str, np.ndarray] = {}
        with self._tx() as s:
            for chunk in _chunks(cand):
                for fid, iid, ext, name in s.execute(
                    sa.select(FaceRow.id, FaceRow.identity_id, IdentityRow.external_id, IdentityRow.name)
                    .join(IdentityRow, IdentityRow.id == FaceRow.identity_id)
                    .where(FaceRow.id.in_(chunk), FaceRow.collection_id == collection_id)
                ):
                    info[int(fid)] = (iid, ext, name)
            if aggregate == "mean" and info:
                idents = sorted({v[0] for v in info.values()})
                per: dict[str, list[bytes]] = defaultdict(list)
                for chunk in _chunks(idents):
                    for iid, vec in s.execute(
                        sa.select(FaceRow.identity_id, EmbeddingRow.vector)
                        .join(EmbeddingRow, EmbeddingRow.face_id == FaceRow.id)
                        .where(FaceRow.identity_id.in_(chunk), EmbeddingRow.model == active)
                    ):
                        per[iid].append(vec)
                means = {
                    iid: np.frombuffer(b"".join(v), np.float32).reshape(len(v), -1) for iid, v in per.items()
                }

        results: list[IdentifyResult] = []
        for qi in range(len(q)):
            best: dict[str, list[Any]] = {}  # identity -> [best score, best face, count]
            for sc, fid in zip(scores[qi], ids[qi]):
                meta = info.get(int(fid)) if fid >= 0 else None
                if meta is None:  # padding, or deleted since the search
                    continue
                cur = best.get(meta[0])
                if cur is None:
                    best[meta[0]] = [float(sc), int(fid), 1]
                else:
                    cur[2] += 1
                    if sc > cur[0]:
                        cur[0], cur[1] = float(sc), int(fid)
            matches = []
            for iid, (sc, fid, cnt) in best.items():
                if aggregate == "mean" and iid in means:
                    sc = float(np.mean(means[iid] @ q[qi]))
                _, ext, name = info[fid]
                matches.append(
                    Match(
                        identity_id=iid,
                        external_id=ext,
                        name=name,
                        score=float(sc),
                        face_id=fid,
                        matched_faces=cnt,
                        above_threshold=threshold is None or sc >= threshold,
                    )
                )
            matches.sort(key=lambda m: (-m.score, m.identity_id))
            matches = matches[: int(top_k)]
            best_score = matches[0].score if matches else None
            unknown = not matches or (threshold is not None and best_score < threshold)  # type: ignore[operator]
            results.append(
                IdentifyResult(matches=matches, best_score=best_score, unknown=unknown, threshold=threshold)
            )
        return results

    def get_embeddings(self, collection_id: str, identity_id: str, model: str) -> np.ndarray:
        """The identity's stored embeddings of ``model`` as an (n, D) float32 array, for
        1:1 verification against an enrolled identity. (0, 0) if it has no faces;
        ModelMismatch if it has faces but none embedded with ``model``."""
        with self._tx() as s:
            self._identity_row(s, collection_id, identity_id)
            rows = s.execute(
                sa.select(EmbeddingRow.vector, EmbeddingRow.dim)
                .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
                .where(FaceRow.identity_id == identity_id, EmbeddingRow.model == model)
                .order_by(EmbeddingRow.face_id)
            ).all()
            if not rows:
                n_faces = s.scalar(sa.select(sa.func.count()).where(FaceRow.identity_id == identity_id))
                if n_faces:
                    raise ModelMismatch("identity has no embeddings of this model", model=model)
                return np.zeros((0, 0), np.float32)
        return np.frombuffer(b"".join(r[0] for r in rows), np.float32).reshape(len(rows), rows[0][1]).copy()

    @staticmethod
    def _counts_by_collection(s: Session) -> tuple[dict[str, int], dict[str, int]]:
        """Identities and faces per collection id, in two grouped queries."""
        ids = sa.select(IdentityRow.collection_id, sa.func.count()).group_by(IdentityRow.collection_id)
        faces = sa.select(FaceRow.collection_id, sa.func.count()).group_by(FaceRow.collection_id)
        return dict(s.execute(ids).tuples().all()), dict(s.execute(faces).tuples().all())

    def gallery_size(self) -> GallerySize:
        """Counts for metrics: collections, identities, faces (total and per collection)
        and vectors currently held by this process's FAISS indexes."""
        with self._tx() as s:
            colls = list(s.scalars(sa.select(CollectionRow.id)))
            ids, faces = self._counts_by_collection(s)
        with self._slots_lock:
            indexed = {f"{c}/{m}": (sl.index.ntotal if sl.index else 0) for (c, m), sl in self._slots.items()}
        return GallerySize(
            collections=len(colls),
            identities=sum(ids.values()),
            faces=sum(faces.values()),
            per_collection={c: {"identities": ids.get(c, 0), "faces": faces.get(c, 0)} for c in colls},
            indexed=indexed,
        )

    # ------------------------------------------------------------------ index maintenance
    def _bump(self, s: Session, collection_id: str) -> tuple[int, str, datetime]:
        """Take the collection's write lock by bumping its revision (first statement of
        every index-relevant write). Returns (new revision, active model, epoch)."""
        row = s.execute(
            sa.update(CollectionRow)
            .where(CollectionRow.id == collection_id)
            .values(revision=CollectionRow.revision + 1)
            .returning(CollectionRow.revision, CollectionRow.model, CollectionRow.created_at)
        ).first()
        if row is None:
            raise CollectionNotFound(collection_id=collection_id)
        rev = int(row[0])
        if rev % _LOG_PRUNE_EVERY == 0:
            s.execute(
                sa.delete(IndexLogRow).where(
                    IndexLogRow.collection_id == collection_id, IndexLogRow.revision <= rev - _LOG_KEEP
                )
            )
        return rev, row[1], row[2]

    @staticmethod
    def _log(s: Session, collection_id: str, rev: int, face_ids: Sequence[int], op: str) -> None:
        """Record touched faces under ``rev``. Every bumped revision gets at least one row
        (face id 0, a no-op, when none were touched) so gaps mean 'pruned'."""
        rows = [
            {"collection_id": collection_id, "revision": rev, "face_id": int(f), "op": op} for f in face_ids
        ]
        if not rows:
            rows = [{"collection_id": collection_id, "revision": rev, "face_id": 0, "op": "n"}]
        for chunk in _chunks(rows, 1000):
            s.execute(sa.insert(IndexLogRow), list(chunk))

    def _slot(self, collection_id: str, model: str) -> _Slot:
        with self._slots_lock:
            return self._slots.setdefault((collection_id, model), _Slot())

    def _drop_slots(self, collection_id: str, keep_model: str | None = None) -> None:
        with self._slots_lock:
            for key in [k for k in self._slots if k[0] == collection_id and k[1] != keep_model]:
                del self._slots[key]

    def _index_for(
        self,
        collection_id: str,
        model: str,
        revision: int | None = None,
        epoch: datetime | None = None,
    ) -> VectorIndex | None:
        """The up-to-date index of (collection, model): built on first use, replayed
        forward when the database's revision is ahead of it."""
        if revision is None or epoch is None:
            with self._tx() as s:
                coll = self._require_collection(s, collection_id)
                revision, epoch = coll.revision, coll.created_at
        slot = self._slot(collection_id, model)
        if slot.revision >= revision and slot.epoch == epoch:
            return slot.index
        with slot.mutex:
            if slot.epoch != epoch or slot.revision < 0:
                self._rebuild(slot, collection_id, model, epoch)
            if slot.revision < revision:
                self._sync(slot, collection_id, model)
            return slot.index

    def _load(self, collection_id: str, model: str) -> tuple[int, np.ndarray, np.ndarray, int | None]:
        """(revision, ids, vectors, dim) of every stored embedding of (collection, model).

        The revision is read *before* the vectors, so the snapshot is at least as new as
        the revision; replaying the log from there is idempotent (state-based), so this is
        correct under READ COMMITTED too.
        """
        with self._tx() as s:
            rev = int(self._require_collection(s, collection_id).revision)
        ids: list[int] = []
        blocks: list[np.ndarray] = []  # decoded per partition: peak memory ~ 1x the vectors
        dim: int | None = None
        with self._tx() as s:
            res = s.execute(
                sa.select(EmbeddingRow.face_id, EmbeddingRow.vector, EmbeddingRow.dim)
                .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
                .where(FaceRow.collection_id == collection_id, EmbeddingRow.model == model)
                .order_by(EmbeddingRow.face_id)
                .execution_options(yield_per=20_000)
            )
            for part in res.partitions():
                ids.extend(int(r[0]) for r in part)
                dim = int(part[0][2])
                blocks.append(np.frombuffer(b"".join(r[1] for r in part), np.float32).reshape(len(part), dim))
        if not ids:
            return rev, np.zeros(0, np.int64), np.zeros((0, 0), np.float32), None
        return rev, np.asarray(ids, np.int64), np.concatenate(blocks), dim

    def _rebuild(self, slot: _Slot, collection_id: str, model: str, epoch: datetime | None) -> None:
        """Build the slot's index from the database (caller holds ``slot.mutex``)."""
        rev, ids, mat, dim = self._load(collection_id, model)
        slot.index = VectorIndex.build(ids, mat, self.params) if dim is not None else None
        slot.revision = rev
        slot.epoch = epoch
        if slot.index is not None:
            log.info(
                "gallery index %s/%s built: %s, %d vectors, %.2fs",
                collection_id,
                model,
                slot.index.kind,
                slot.index.ntotal,
                slot.index.build_seconds,
            )

    def _sync(self, slot: _Slot, collection_id: str, model: str) -> None:
        """Replay ``index_log`` after ``slot.revision`` onto the slot (holding ``slot.mutex``)."""
        target, changes = self._changes_since(collection_id, model, slot.revision)
        if changes is None:  # log pruned past us: rebuild from scratch
            self._rebuild(slot, collection_id, model, slot.epoch)
            return
        self._apply_changes(slot, changes)
        slot.revision = max(slot.revision, target)
        self._maybe_schedule_rebuild(slot, collection_id, model)

    def _changes_since(
        self, collection_id: str, model: str, since: int
    ) -> tuple[int, tuple[list[int], np.ndarray, np.ndarray] | None]:
        """(new revision, (touched ids, ids to add, their vectors)) after ``since``;
        changes is None if the log no longer reaches back to ``since``."""
        with self._tx() as s:
            rows = s.execute(
                sa.select(IndexLogRow.revision, IndexLogRow.face_id)
                .where(IndexLogRow.collection_id == collection_id, IndexLogRow.revision > since)
                .order_by(IndexLogRow.revision)
            ).all()
            if not rows:
                return since, ([], np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
            if rows[0][0] != since + 1:
                return since, None
            touched = sorted({int(r[1]) for r in rows if r[1]})
            add_ids: list[int] = []
            vecs: list[bytes] = []
            dim = 0
            for chunk in _chunks(touched):
                for fid, vec, d in s.execute(
                    sa.select(EmbeddingRow.face_id, EmbeddingRow.vector, EmbeddingRow.dim)
                    .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
                    .where(
                        EmbeddingRow.face_id.in_(chunk),
                        EmbeddingRow.model == model,
                        FaceRow.collection_id == collection_id,
                    )
                ):
                    add_ids.append(int(fid))
                    vecs.append(vec)
                    dim = d
        target = int(rows[-1][0])
        mat = (
            np.frombuffer(b"".join(vecs), np.float32).reshape(len(add_ids), dim)
            if add_ids
            else np.zeros((0, 0), np.float32)
        )
        return target, (touched, np.asarray(add_ids, np.int64), mat)

    def _apply_changes(self, slot: _Slot, changes: tuple[list[int], np.ndarray, np.ndarray]) -> None:
        touched, add_ids, mat = changes
        if slot.index is None:
            if len(add_ids):
                slot.index = VectorIndex.build(add_ids, mat, self.params)
            return
        slot.index.apply(np.asarray(touched, np.int64), add_ids, mat)

    def _after_write(
        self,
        collection_id: str,
        rev: int,
        added: tuple[str, np.ndarray, np.ndarray] | None = None,
        removed: Sequence[int] = (),
        replace: bool = False,
    ) -> None:
        """Bring this process's loaded indexes of the collection to revision ``rev``.

        Fast path: an index exactly one revision behind gets the change applied directly
        from memory. Otherwise (another writer got in between) the log is replayed.
        Slots never built are left alone: their first use builds them from the DB.
        """
        with self._slots_lock:
            slots = [(k[1], sl) for k, sl in self._slots.items() if k[0] == collection_id]
        for model, slot in slots:
            with slot.mutex:
                if slot.revision < 0 or slot.revision >= rev:
                    continue
                if slot.revision == rev - 1:
                    try:
                        if added is not None and added[0] == model:
                            if slot.index is None:
                                slot.index = VectorIndex.build(added[1], added[2], self.params)
                            else:  # a new face (enroll) cannot be in the index yet
                                slot.index.add(added[1], added[2], replace=replace)
                        elif removed and slot.index is not None:
                            slot.index.remove(np.asarray(removed, np.int64))
                        slot.revision = rev
                        self._maybe_schedule_rebuild(slot, collection_id, model)
                        continue
                    except ModelMismatch:
                        log.exception("index %s/%s: dimension clash, rebuilding", collection_id, model)
                        slot.revision = -1
                        continue
                try:
                    self._sync(slot, collection_id, model)
                except Exception:  # the write is committed; the next read will sync again
                    log.exception("index %s/%s: sync after write failed", collection_id, model)

    def _maybe_schedule_rebuild(self, slot: _Slot, collection_id: str, model: str) -> None:
        """Switch kind (flat <-> IVF) or retrain IVF in a background thread; searches use
        the current index meanwhile, and the new one is caught up before the swap."""
        if slot.index is None or slot.rebuilding or not slot.index.needs_rebuild():
            return
        slot.rebuilding = True
        epoch = slot.epoch

        def work() -> None:
            try:
                rev, ids, mat, dim = self._load(collection_id, model)
                new = VectorIndex.build(ids, mat, self.params) if dim is not None else None
                with slot.mutex:
                    if slot.epoch != epoch:
                        return
                    target, changes = self._changes_since(collection_id, model, rev)
                    if changes is None:
                        slot.revision = -1  # next use rebuilds synchronously
                        return
                    tmp = _Slot(epoch=epoch, index=new, revision=rev)
                    self._apply_changes(tmp, changes)
                    slot.index, slot.revision = tmp.index, max(rev, target)
                    log.info(
                        "gallery index %s/%s rebuilt as %s (%d vectors)",
                        collection_id,
                        model,
                        new.kind if new else None,
                        new.ntotal if new else 0,
                    )
            except Exception:
                log.exception("background rebuild of %s/%s failed", collection_id, model)
            finally:
                slot.rebuilding = False

        t = threading.Thread(target=work, name=f"faiss-rebuild-{collection_id}", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def index_stats(self, collection_id: str, model: str | None = None) -> dict[str, Any]:
        """Kind, size, revision of the (built, up-to-date) index; for metrics and tests."""
        if model is None:
            model = self.get_collection(collection_id).model
        idx = self._index_for(collection_id, model)
        slot = self._slot(collection_id, model)
        return {
            "kind": idx.kind if idx else None,
            "ntotal": idx.ntotal if idx else 0,
            "dim": idx.dim if idx else None,
            "revision": slot.revision,
            "memory_bytes": idx.memory_bytes() if idx else 0,
        }

    def indexed_ids(self, collection_id: str, model: str | None = None) -> np.ndarray:
        """Sorted face ids currently in this process's index (consistency checks)."""
        if model is None:
            model = self.get_collection(collection_id).model
        idx = self._index_for(collection_id, model)
        return np.sort(idx.ids()) if idx else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ API keys
    def create_api_key(
        self,
        name: str,
        prefix: str,
        key_hash: str,
        scopes: Sequence[str],
        collections: Sequence[str] | None = None,
    ) -> ApiKey:
        """Store a key's public prefix and hash (the caller generates and hashes the secret)."""
        if not prefix or not key_hash:
            raise InvalidRequest("prefix and key_hash are required")
        row = ApiKeyRow(
            id=uuid.uuid4().hex,
            prefix=prefix,
            key_hash=key_hash,
            name=name or "",
            scopes=list(scopes),
            collections=list(collections) if collections is not None else None,
            created_at=utcnow(),
        )
        with self._tx(write=True) as s:
            s.add(row)
        return self._key_record(row)

    def find_api_keys_by_prefix(self, prefix: str, *, include_revoked: bool = False) -> list[ApiKey]:
        """Candidate keys for an incoming secret; the caller compares hashes in constant time."""
        with self._tx() as s:
            q = sa.select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)
            if not include_revoked:
                q = q.where(ApiKeyRow.revoked_at.is_(None))
            return [self._key_record(r) for r in s.scalars(q.order_by(ApiKeyRow.created_at))]

    def list_api_keys(self, *, include_revoked: bool = True) -> list[ApiKey]:
        with self._tx() as s:
            q = sa.select(ApiKeyRow)
            if not include_revoked:
                q = q.where(ApiKeyRow.revoked_at.is_(None))
            return [self._key_record(r) for r in s.scalars(q.order_by(ApiKeyRow.created_at, ApiKeyRow.id))]

    def get_api_key(self, key_id: str) -> ApiKey:
        with self._tx() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound("No API key with that id.", key_id=key_id)
            return self._key_record(row)

    def revoke_api_key(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept for audit). Revoking twice keeps the first time."""
        with self._tx(write=True) as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound("No API key with that id.", key_id=key_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return self._key_record(row)

    def touch_api_key(self, key_id: str, *, min_interval_s: float = 60.0) -> None:
        """Record use of a key. At most one write per key per ``min_interval_s`` so that
        authentication does not turn every read request into a database write."""
        now = utcnow()
        cutoff = now - timedelta(seconds=min_interval_s)
        with self._tx(write=True) as s:
            s.execute(
                sa.update(ApiKeyRow)
                .where(
                    ApiKeyRow.id == key_id,
                    sa.or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < cutoff),
                )
                .values(last_used_at=now)
            )

    @staticmethod
    def _key_record(r: ApiKeyRow) -> ApiKey:
        return ApiKey(
            id=r.id,
            prefix=r.prefix,
            key_hash=r.key_hash,
            name=r.name,
            scopes=list(r.scopes or []),
            collections=list(r.collections) if r.collections is not None else None,
            created_at=_aware(r.created_at),  # type: ignore[arg-type]
            revoked_at=_aware(r.revoked_at),
            last_used_at=_aware(r.last_used_at),
        )

    # ------------------------------------------------------------------ model switch
    def start_reembed_job(self, collection_id: str, new_model: str) -> Job:
        """Queue a re-embedding of every face of the collection with ``new_model``.

        Run it with :meth:`run_reembed_job` (or :meth:`start_reembed_thread`). One job per
        collection at a time (Conflict otherwise). Re-running after a failure resumes:
        faces that already have a ``new_model`` embedding are skipped.
        """
        now = utcnow()
        with self._tx(write=True) as s:
            coll = self._require_collection(s, collection_id)
            if coll.model == new_model:
                raise Conflict("the collection already uses this model", model=new_model)
            busy = s.scalar(
                sa.select(JobRow.id).where(
                    JobRow.collection_id == collection_id, JobRow.status.in_(("queued", "running"))
                )
            )
            if busy is not None:
                raise Conflict("a job is already running for this collection", job_id=busy)
            total = s.scalar(sa.select(sa.func.count()).where(FaceRow.collection_id == collection_id)) or 0
            row = JobRow(
                id=uuid.uuid4().hex,
                kind="reembed",
                collection_id=collection_id,
                params={"old_model": coll.model, "new_model": new_model},
                status="queued",
                done=0,
                total=int(total),
                created_at=now,
                updated_at=now,
            )
            s.add(row)
        return self._job_record(row)

    def get_job(self, job_id: str) -> Job:
        with self._tx() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id=job_id)
            return self._job_record(row)

    def list_jobs(self, collection_id: str | None = None) -> list[Job]:
        with self._tx() as s:
            q = sa.select(JobRow)
            if collection_id is not None:
                q = q.where(JobRow.collection_id == collection_id)
            return [self._job_record(r) for r in s.scalars(q.order_by(JobRow.created_at, JobRow.id))]

    def iter_crops(
        self, collection_id: str, batch: int = 64, *, missing_model: str | None = None, decode: bool = True
    ) -> Iterator[list[tuple[int, np.ndarray | bytes]]]:
        """Yield lists of (face id, crop) in face-id order, ``batch`` at a time; with
        ``missing_model`` only faces lacking an embedding of that model. Each batch is its
        own short read, so enrolls are never blocked by a long re-embed."""
        last = 0
        while True:
            with self._tx() as s:
                self._require_collection(s, collection_id)
                q = sa.select(FaceRow.id, FaceRow.crop_png).where(
                    FaceRow.collection_id == collection_id, FaceRow.id > last
                )
                if missing_model is not None:
                    has = sa.select(EmbeddingRow.face_id).where(
                        EmbeddingRow.face_id == FaceRow.id, EmbeddingRow.model == missing_model
                    )
                    q = q.where(~has.exists())
                rows = s.execute(q.order_by(FaceRow.id).limit(int(batch))).all()
            if not rows:
                return
            last = int(rows[-1][0])
            yield [(int(fid), decode_crop(png) if decode else bytes(png)) for fid, png in rows]

    def put_embeddings(self, model: str, embeddings: Mapping[int, np.ndarray]) -> int:
        """Store (or replace) embeddings of ``model`` for existing faces; returns how many
        were stored. Faces deleted meanwhile are skipped. One transaction per collection."""
        if not embeddings:
            return 0
        fids = [int(f) for f in embeddings]
        vecs = _normalise(np.stack([np.asarray(embeddings[f], np.float32).ravel() for f in embeddings]))
        dim = int(vecs.shape[1])
        by_face = dict(zip(fids, vecs))
        with self._tx() as s:
            owner: dict[int, str] = {}
            for chunk in _chunks(fids):
                owner.update(
                    (int(a), b)
                    for a, b in s.execute(
                        sa.select(FaceRow.id, FaceRow.collection_id).where(FaceRow.id.in_(chunk))
                    )
                )
        per_coll: dict[str, list[int]] = defaultdict(list)
        for f in fids:
            if f in owner:
                per_coll[owner[f]].append(f)
        stored = 0
        for cid, ids in per_coll.items():
            with self._tx(write=True) as s:
                rev = self._bump(s, cid)[0]
                stored_dim = self._stored_dim(s, cid, model)
                if stored_dim is not None and stored_dim != dim:
                    raise ModelMismatch(f"embedding dimension {dim} differs from stored {stored_dim}")
                # still there? (deleted between the lookup and this transaction)
                alive = [
                    int(x)
                    for chunk in _chunks(ids)
                    for x in s.scalars(sa.select(FaceRow.id).where(FaceRow.id.in_(chunk)))
                ]
                for chunk in _chunks(alive):
                    s.execute(
                        sa.delete(EmbeddingRow).where(
                            EmbeddingRow.face_id.in_(chunk), EmbeddingRow.model == model
                        )
                    )
                if alive:
                    s.execute(
                        sa.insert(EmbeddingRow),
                        [
                            {"face_id": f, "model": model, "dim": dim, "vector": by_face[f].tobytes()}
                            for f in alive
                        ],
                    )
                self._log(s, cid, rev, alive, "a")
            stored += len(alive)
            if alive:
                self._after_write(
                    cid,
                    rev,
                    added=(model, np.asarray(alive, np.int64), np.stack([by_face[f] for f in alive])),
                    replace=True,  # put_embeddings may overwrite an embedding already indexed
                )
            else:
                self._after_write(cid, rev)
        return stored

    def finish_switch(self, collection_id: str, new_model: str, *, drop_old: bool = True) -> Collection:
        """Atomically make ``new_model`` the collection's active model.

        Refused (Conflict) while any face lacks a ``new_model`` embedding (e.g. enrolled
        during the re-embed), so identify never runs on a partial index. The new model's
        index is built before this returns; with ``drop_old`` the old embeddings are deleted
        in the same transaction.
        """
        with self._tx(write=True) as s:
            rev, old_model, _ = self._bump(s, collection_id)
            missing = s.scalar(
                sa.select(sa.func.count())
                .select_from(FaceRow)
                .where(
                    FaceRow.collection_id == collection_id,
                    ~sa.select(EmbeddingRow.face_id)
                    .where(EmbeddingRow.face_id == FaceRow.id, EmbeddingRow.model == new_model)
                    .exists(),
                )
            )
            if missing:
                raise Conflict("faces without an embedding of the new model remain", missing=int(missing))
            touched: list[int] = []
            if drop_old and old_model != new_model:
                touched = [
                    int(x)
                    for x in s.scalars(
                        sa.select(EmbeddingRow.face_id)
                        .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
                        .where(FaceRow.collection_id == collection_id, EmbeddingRow.model == old_model)
                    )
                ]
                for chunk in _chunks(touched):
                    s.execute(
                        sa.delete(EmbeddingRow).where(
                            EmbeddingRow.face_id.in_(chunk), EmbeddingRow.model == old_model
                        )
                    )
            self._log(s, collection_id, rev, touched, "d")
            s.execute(
                sa.update(CollectionRow).where(CollectionRow.id == collection_id).values(model=new_model)
            )
        self._drop_slots(collection_id, keep_model=new_model)
        self._after_write(collection_id, rev)
        self._index_for(collection_id, new_model)
        return self.get_collection(collection_id)

    def run_reembed_job(self, job_id: str, embed_fn: EmbedFn, *, batch: int = 32, max_passes: int = 5) -> Job:
        """Run a re-embed job to completion in the calling thread (see start_reembed_thread).

        Embeds every face lacking a ``new_model`` embedding with ``embed_fn`` (BGR crops ->
        (N, D) embeddings), records progress after each batch, then flips the model with
        :meth:`finish_switch`. Faces enrolled meanwhile are caught by another pass.
        Any error marks the job failed (the flip has not happened; rerun to resume).
        """
        job = self.get_job(job_id)
        if job.status not in ("queued", "failed"):
            raise Conflict(f"job is {job.status}", job_id=job_id)
        cid, new_model = job.collection_id, job.params["new_model"]
        self._update_job(job_id, status="running", error=None)
        try:
            for _ in range(max_passes):
                self._refresh_job_counts(job_id, cid, new_model)
                for chunk in self.iter_crops(cid, batch, missing_model=new_model):
                    fids = [f for f, _ in chunk]
                    emb = np.asarray(embed_fn([c for _, c in chunk]), np.float32)  # type: ignore[misc]
                    if emb.ndim != 2 or emb.shape[0] != len(fids):
                        raise InvalidRequest(f"embed_fn returned shape {emb.shape} for {len(fids)} crops")
                    self.put_embeddings(new_model, dict(zip(fids, emb)))
                    self._refresh_job_counts(job_id, cid, new_model)
                try:
                    self.finish_switch(cid, new_model)
                    break
                except Conflict:
                    continue  # faces enrolled during the pass: embed those too
            else:
                raise Conflict("could not catch up with concurrent enrolls")
        except Exception as e:
            log.exception("re-embed job %s failed", job_id)
            self._update_job(job_id, status="failed", error=f"{type(e).__name__}: {e}"[:2000])
            return self.get_job(job_id)
        self._refresh_job_counts(job_id, cid, new_model)
        self._update_job(job_id, status="done")
        return self.get_job(job_id)

    def start_reembed_thread(self, job_id: str, embed_fn: EmbedFn, *, batch: int = 32) -> threading.Thread:
        """Run :meth:`run_reembed_job` in a daemon thread; poll :meth:`get_job` for progress."""
        t = threading.Thread(
            target=self.run_reembed_job,
            args=(job_id, embed_fn),
            kwargs={"batch": batch},
            name=f"reembed-{job_id[:8]}",
            daemon=True,
        )
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return t

    def _refresh_job_counts(self, job_id: str, collection_id: str, model: str) -> None:
        with self._tx() as s:
            total = s.scalar(sa.select(sa.func.count()).where(FaceRow.collection_id == collection_id)) or 0
            done = (
                s.scalar(
                    sa.select(sa.func.count())
                    .select_from(EmbeddingRow)
                    .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
                    .where(FaceRow.collection_id == collection_id, EmbeddingRow.model == model)
                )
                or 0
            )
        self._update_job(job_id, done=int(done), total=int(total))

    def _update_job(self, job_id: str, **values: Any) -> None:
        values["updated_at"] = utcnow()
        with self._tx(write=True) as s:
            s.execute(sa.update(JobRow).where(JobRow.id == job_id).values(**values))

    def _recover_jobs(self) -> None:
        """Jobs 'running' with no progress for a while belong to a dead process: mark
        them failed so they can be restarted (which resumes where they stopped)."""
        cutoff = utcnow() - _JOB_STALE
        stale = (JobRow.status == "running", JobRow.updated_at < cutoff)
        with self._tx() as s:
            if s.scalar(sa.select(sa.func.count()).where(*stale)) == 0:
                return  # the usual case: no write at start-up (a read-only replica can start)
        try:
            with self._tx(write=True) as s:
                s.execute(
                    sa.update(JobRow)
                    .where(*stale)
                    .values(status="failed", error="interrupted (process stopped)", updated_at=utcnow())
                )
        except StorageUnavailable:
            log.warning("cannot mark interrupted jobs failed: the database is read-only")

    @staticmethod
    def _job_record(r: JobRow) -> Job:
        return Job(
            id=r.id,
            kind=r.kind,
            collection_id=r.collection_id,
            params=dict(r.params or {}),
            status=r.status,  # type: ignore[arg-type]
            done=r.done,
            total=r.total,
            error=r.error,
            created_at=_aware(r.created_at),  # type: ignore[arg-type]
            updated_at=_aware(r.updated_at),  # type: ignore[arg-type]
        )


__all__ = ["EmbedFn", "Gallery", "decode_crop", "encode_crop"]

"""The gallery façade: one object for the use cases, composed of modules with one job each.

* ``store.py`` / ``faces.py`` — rows: collections, identities, faces, crops, embeddings
  (the database is the source of truth; every write is one transaction).
* ``changes.py`` — the change log written in the same transactions (an outbox).
* ``indexes.py`` + ``vector_index.py`` — this process's vector indexes, derived from the
  rows and kept current through the change log; ``faiss_index.py`` implements them.
* ``jobs.py`` — model switches (re-embedding from stored crops).

Each write here is: the store commits and returns a :class:`Change`, then the indexes
follow it. Searches join index hits with committed rows, so a face deleted a moment ago
is never returned.

Typical use::

    g = Gallery(settings).start()
    g.create_collection("staff", "Staff", model="sface-2021dec-int8bq")
    who = g.create_identity("staff", external_id="E-1001", name="Ada")
    g.enroll("staff", who.id, [EnrollFace(crop=crop, embedding=emb, model="sface-2021dec-int8bq")])
    [hits] = g.search("staff", "sface-2021dec-int8bq", emb[None, :], k=20)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from service.errors import InvalidRequest, ModelMismatch
from service.gallery.changes import Change, ChangeLog
from service.gallery.faces import FaceStore
from service.gallery.faiss_index import FaissIndex, IndexParams
from service.gallery.indexes import IndexCache
from service.gallery.jobs import EmbedFn, ReembedJobs
from service.gallery.records import (
    Collection,
    EnrollFace,
    FaceHit,
    FaceRecord,
    GallerySize,
    Identity,
    Job,
    Page,
)
from service.gallery.store import GalleryStore
from service.gallery.vectors import normalise
from service.storage import Database


class Gallery:
    """Thread-safe. Create one per process, :meth:`start` it once (runs migrations), share it
    between request handlers, :meth:`close` it on shutdown."""

    def __init__(self, settings: Any, *, engine: Engine | None = None, db: Database | None = None) -> None:
        self.settings = settings
        self.params = IndexParams.from_settings(settings)
        self.db = db or Database(settings, engine=engine)
        self.store = GalleryStore(self.db, settings.recognizer)
        self.faces = FaceStore(self.db)
        self.changes = ChangeLog(self.db)
        self.indexes = IndexCache(self.changes, lambda ids, vecs: FaissIndex.build(ids, vecs, self.params))
        self.jobs = ReembedJobs(self.db, self.faces)

    # ------------------------------------------------------------------ lifecycle
    def start(self, *, warm: bool = False) -> Gallery:
        """Open the database, migrate it to ``head``, recover jobs left by a crash.

        Indexes are built lazily on first use; ``warm=True`` builds every collection's
        active-model index now (slower start, no first-request latency).
        """
        if self.db.started:
            return self
        self.db.start()
        self.interrupted_jobs: list[Job] = self.jobs.recover()  # their process died; resumable
        if warm:
            for c in self.store.list_collections(counts=False):
                self.indexes.get(c.id, c.model)
        return self

    def close(self) -> None:
        """Wait for background jobs briefly and release the database connections."""
        self.jobs.wait(timeout=5)
        self.indexes.wait_idle(timeout=5)
        self.indexes.clear()
        self.db.close()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for background index rebuilds and re-embed threads; True if all finished."""
        return self.jobs.wait(timeout) & self.indexes.wait_idle(timeout)

    def __enter__(self) -> Gallery:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def _follow(self, change: Change) -> None:
        self.indexes.apply(change)

    # ------------------------------------------------------------------ collections
    def create_collection(self, collection_id: str, name: str = "", model: str | None = None,
                          metadata: Mapping[str, Any] | None = None) -> Collection:
        c = self.store.create_collection(collection_id, name, model, metadata)
        self.indexes.drop(collection_id)
        return c

    def get_collection(self, collection_id: str) -> Collection:
        return self.store.get_collection(collection_id)

    def list_collections(self, *, counts: bool = True) -> list[Collection]:
        return self.store.list_collections(counts=counts)

    def update_collection(self, collection_id: str, *, name: str | None = None,
                          metadata: Mapping[str, Any] | None = None) -> Collection:
        return self.store.update_collection(collection_id, name=name, metadata=metadata)

    def delete_collection(self, collection_id: str) -> None:
        self.store.delete_collection(collection_id)
        self.indexes.drop(collection_id)

    # ------------------------------------------------------------------ identities
    def create_identity(self, collection_id: str, external_id: str, name: str = "",
                        metadata: Mapping[str, Any] | None = None) -> Identity:
        return self.store.create_identity(collection_id, external_id, name, metadata)

    def get_identity(self, collection_id: str, identity_id: str) -> Identity:
        return self.store.get_identity(collection_id, identity_id)

    def get_identity_by_external_id(self, collection_id: str, external_id: str) -> Identity:
        return self.store.get_identity_by_external_id(collection_id, external_id)

    def list_identities(self, collection_id: str, limit: int = 100, cursor: str | None = None) -> Page:
        return self.store.list_identities(collection_id, limit, cursor)

    def update_identity(self, collection_id: str, identity_id: str, *, external_id: str | None = None,
                        name: str | None = None, metadata: Mapping[str, Any] | None = None) -> Identity:
        return self.store.update_identity(collection_id, identity_id, external_id=external_id, name=name,
                                          metadata=metadata)

    def delete_identity(self, collection_id: str, identity_id: str) -> int:
        """Delete an identity with its faces; they leave the index before this returns."""
        n, change = self.store.delete_identity(collection_id, identity_id)
        self._follow(change)
        return n

    # ------------------------------------------------------------------ faces
    def enroll(self, collection_id: str, identity_id: str, faces: Sequence[EnrollFace]) -> list[FaceRecord]:
        """Store faces of an identity in one transaction; searchable when this returns."""
        records, change = self.faces.enroll(collection_id, identity_id, faces)
        self._follow(change)
        return records

    def list_faces(self, collection_id: str, identity_id: str) -> list[FaceRecord]:
        return self.faces.list_faces(collection_id, identity_id)

    def get_face(self, collection_id: str, face_id: int) -> FaceRecord:
        return self.faces.get_face(collection_id, face_id)

    def get_face_crop(self, collection_id: str, face_id: int) -> bytes:
        return self.faces.crop(collection_id, face_id)

    def delete_face(self, collection_id: str, face_id: int) -> None:
        """Delete one face and its embeddings; it leaves the index before this returns."""
        self._follow(self.faces.delete_face(collection_id, face_id))

    def get_embeddings(self, collection_id: str, identity_id: str, model: str) -> np.ndarray:
        return self.faces.embeddings(collection_id, identity_id, model)

    def embeddings_of(self, identity_ids: Sequence[str], model: str) -> dict[str, np.ndarray]:
        return self.faces.embeddings_of(identity_ids, model)

    def iter_crops(self, collection_id: str, batch: int = 64, *, missing_model: str | None = None,
                   decode: bool = True) -> Iterator[list[tuple[int, np.ndarray | bytes]]]:
        return self.faces.iter_crops(collection_id, batch, missing_model=missing_model, decode=decode)

    def put_embeddings(self, model: str, embeddings: Mapping[int, np.ndarray]) -> int:
        """Store (or replace) embeddings of ``model`` for existing faces; how many were stored."""
        stored, changes = self.faces.put_embeddings(model, embeddings)
        for change in changes:
            self._follow(change)
        return stored

    # ------------------------------------------------------------------ search
    def search(self, collection_id: str, model: str, queries: np.ndarray, k: int) -> list[list[FaceHit]]:
        """The ``k`` nearest stored faces of each query row, best first, joined with their
        identities. ModelMismatch if ``model`` is not the collection's active model or the
        query dimension differs from the gallery's."""
        if not 1 <= int(k):
            raise InvalidRequest("k must be at least 1")
        q = normalise(queries, "query")
        revision, active, epoch = self.changes.head(collection_id)
        if model != active:
            raise ModelMismatch("query model differs from the collection's active model", active_model=active,
                                got=model)
        index = self.indexes.get(collection_id, active, revision, epoch)
        if index is None or index.ntotal == 0:
            return [[] for _ in range(len(q))]
        scores, ids = index.search(q, int(k))
        owners = self.faces.owners(collection_id, np.unique(ids[ids >= 0]).tolist())
        out = []
        for row_s, row_i in zip(scores, ids):
            hits = []
            for sc, fid in zip(row_s, row_i):
                meta = owners.get(int(fid)) if fid >= 0 else None
                if meta is not None:  # None: padding, or deleted since the search
                    hits.append(FaceHit(int(fid), meta[0], meta[1], meta[2], float(sc)))
            out.append(hits)
        return out

    def gallery_size(self) -> GallerySize:
        """Counts for metrics: collections, identities, faces (total and per collection) and
        vectors currently held by this process's indexes."""
        colls = self.store.list_collections(counts=True)
        return GallerySize(
            collections=len(colls),
            identities=sum(c.identities or 0 for c in colls),
            faces=sum(c.faces or 0 for c in colls),
            per_collection={c.id: {"identities": c.identities or 0, "faces": c.faces or 0} for c in colls},
            indexed=self.indexes.sizes(),
        )

    def index_stats(self, collection_id: str, model: str | None = None) -> dict[str, Any]:
        """Kind, size, revision of the (built, up-to-date) index; for metrics and tests."""
        model = model or self.get_collection(collection_id).model
        idx = self.indexes.get(collection_id, model)
        return {"kind": idx.kind if idx else None, "ntotal": idx.ntotal if idx else 0,
                "dim": idx.dim if idx else None, "revision": self.indexes.revision(collection_id, model),
                "memory_bytes": idx.memory_bytes() if idx else 0}

    def indexed_ids(self, collection_id: str, model: str | None = None) -> np.ndarray:
        """Sorted face ids currently in this process's index (consistency checks)."""
        model = model or self.get_collection(collection_id).model
        idx = self.indexes.get(collection_id, model)
        return np.sort(idx.ids()) if idx else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ model switch
    def start_reembed_job(self, collection_id: str, new_model: str) -> Job:
        """Queue a re-embedding of every face with ``new_model`` (see jobs.py)."""
        return self.jobs.start(collection_id, new_model)

    def get_job(self, job_id: str) -> Job:
        return self.jobs.get(job_id)

    def list_jobs(self, collection_id: str | None = None) -> list[Job]:
        return self.jobs.list(collection_id)

    def finish_switch(self, collection_id: str, new_model: str, *, drop_old: bool = True) -> Collection:
        """Atomically make ``new_model`` active (Conflict while a face lacks its embedding);
        its index is built before this returns."""
        change = self.jobs.flip(collection_id, new_model, drop_old=drop_old)
        self.indexes.drop(collection_id, keep_model=new_model)
        self._follow(change)
        self.indexes.get(collection_id, new_model)
        return self.get_collection(collection_id)

    def run_reembed_job(self, job_id: str, embed_fn: EmbedFn, *, batch: int = 32, max_passes: int = 5) -> Job:
        return self.jobs.run(job_id, embed_fn, self, batch=batch, max_passes=max_passes)

    def start_reembed_thread(self, job_id: str, embed_fn: EmbedFn, *, batch: int = 32) -> threading.Thread:
        return self.jobs.run_in_thread(job_id, embed_fn, self, batch=batch)

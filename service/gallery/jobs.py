"""Model-switch jobs: re-embed a collection's stored crops with a new recognizer, then flip.

Identify keeps using the old model while the job runs; the flip happens in one
transaction once every face has an embedding of the new model (faces enrolled during
the job are caught by another pass), so a search never runs on a partial index. Jobs are
rows: progress survives a restart, and a job whose process died is marked failed at the
next start, after which rerunning it resumes where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Protocol

import numpy as np
import sqlalchemy as sa

from service.errors import Conflict, InvalidRequest, JobNotFound, StorageUnavailable
from service.gallery.changes import Change, ChangeLog
from service.gallery.faces import FaceStore
from service.gallery.records import Job
from service.gallery.store import aware, require_collection
from service.gallery.vectors import chunks
from service.storage import Database
from service.storage.schema import CollectionRow, EmbeddingRow, FaceRow, JobRow, utcnow

log = logging.getLogger("service.gallery")

#: ``embed_fn`` for re-embedding: BGR uint8 crops -> (N, D) float32 embeddings.
EmbedFn = Callable[[list[np.ndarray]], np.ndarray]
JOB_STALE = timedelta(minutes=5)  # a "running" job not updated for this long is dead


class Switcher(Protocol):
    """What a job needs from the gallery: writes that keep the indexes in step."""

    def put_embeddings(self, model: str, embeddings: Mapping[int, np.ndarray]) -> int: ...

    def finish_switch(self, collection_id: str, new_model: str, *, drop_old: bool = True) -> Any: ...


def job_record(r: JobRow) -> Job:
    return Job(id=r.id, kind=r.kind, collection_id=r.collection_id, params=dict(r.params or {}),
               status=r.status, done=r.done, total=r.total, error=r.error,  # type: ignore[arg-type]
               created_at=aware(r.created_at), updated_at=aware(r.updated_at))  # type: ignore[arg-type]


class ReembedJobs:
    def __init__(self, db: Database, faces: FaceStore) -> None:
        self.db = db
        self.faces = faces
        self.threads: list[threading.Thread] = []

    def start(self, collection_id: str, new_model: str) -> Job:
        """Queue a re-embedding of every face with ``new_model``; one job per collection at a
        time (Conflict otherwise)."""
        now = utcnow()
        with self.db.tx(write=True) as s:
            coll = require_collection(s, collection_id)
            if coll.model == new_model:
                raise Conflict("the collection already uses this model", model=new_model)
            busy = s.scalar(sa.select(JobRow.id).where(JobRow.collection_id == collection_id,
                                                       JobRow.status.in_(("queued", "running"))))
            if busy is not None:
                raise Conflict("a job is already running for this collection", job_id=busy)
            total = s.scalar(sa.select(sa.func.count()).where(FaceRow.collection_id == collection_id)) or 0
            row = JobRow(id=uuid.uuid4().hex, kind="reembed", collection_id=collection_id,
                         params={"old_model": coll.model, "new_model": new_model}, status="queued", done=0,
                         total=int(total), created_at=now, updated_at=now)
            s.add(row)
        return job_record(row)

    def get(self, job_id: str) -> Job:
        with self.db.tx() as s:
            row = s.get(JobRow, job_id)
            if row is None:
                raise JobNotFound(job_id=job_id)
            return job_record(row)

    def list(self, collection_id: str | None = None) -> list[Job]:
        with self.db.tx() as s:
            q = sa.select(JobRow)
            if collection_id is not None:
                q = q.where(JobRow.collection_id == collection_id)
            return [job_record(r) for r in s.scalars(q.order_by(JobRow.created_at, JobRow.id))]

    def flip(self, collection_id: str, new_model: str, *, drop_old: bool = True) -> Change:
        """Make ``new_model`` active in one transaction; refused (Conflict) while any face
        lacks a ``new_model`` embedding. With ``drop_old`` the old embeddings go too."""
        with self.db.tx(write=True) as s:
            rev, old_model, _ = ChangeLog.bump(s, collection_id)
            has_new = sa.select(EmbeddingRow.face_id).where(EmbeddingRow.face_id == FaceRow.id,
                                                            EmbeddingRow.model == new_model)
            missing = s.scalar(sa.select(sa.func.count()).select_from(FaceRow).where(
                FaceRow.collection_id == collection_id, ~has_new.exists()))
            if missing:
                raise Conflict("faces without an embedding of the new model remain", missing=int(missing))
            touched: list[int] = []
            if drop_old and old_model != new_model:
                touched = [int(x) for x in s.scalars(
                    sa.select(EmbeddingRow.face_id).join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
                    .where(FaceRow.collection_id == collection_id, EmbeddingRow.model == old_model))]
                for chunk in chunks(touched):
                    s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id.in_(chunk),
                                                            EmbeddingRow.model == old_model))
            ChangeLog.record(s, collection_id, rev, touched, "d")
            s.execute(sa.update(CollectionRow).where(CollectionRow.id == collection_id).values(model=new_model))
        return Change(collection_id, rev)

    def run(self, job_id: str, embed_fn: EmbedFn, gallery: Switcher, *, batch: int = 32, max_passes: int = 5) -> Job:
        """Run a job to completion in the calling thread: embed every face lacking a
        ``new_model`` embedding, recording progress after each batch, then flip. Any error
        marks the job failed (the flip has not happened; rerun to resume)."""
        job = self.get(job_id)
        if job.status not in ("queued", "failed"):
            raise Conflict(f"job is {job.status}", job_id=job_id)
        cid, new_model = job.collection_id, job.params["new_model"]
        self._update(job_id, status="running", error=None)
        try:
            for _ in range(max_passes):
                self._refresh_counts(job_id, cid, new_model)
                for chunk in self.faces.iter_crops(cid, batch, missing_model=new_model):
                    fids = [f for f, _ in chunk]
                    emb = np.asarray(embed_fn([c for _, c in chunk]), np.float32)  # type: ignore[misc]
                    if emb.ndim != 2 or emb.shape[0] != len(fids):
                        raise InvalidRequest(f"embed_fn returned shape {emb.shape} for {len(fids)} crops")
                    gallery.put_embeddings(new_model, dict(zip(fids, emb)))
                    self._refresh_counts(job_id, cid, new_model)
                try:
                    gallery.finish_switch(cid, new_model)
                    break
                except Conflict:
                    continue  # faces enrolled during the pass: embed those too
            else:
                raise Conflict("could not catch up with concurrent enrolls")
        except Exception as e:
            log.exception("re-embed job %s failed", job_id)
            self._update(job_id, status="failed", error=f"{type(e).__name__}: {e}"[:2000])
            return self.get(job_id)
        self._refresh_counts(job_id, cid, new_model)
        self._update(job_id, status="done")
        return self.get(job_id)

    def run_in_thread(self, job_id: str, embed_fn: EmbedFn, gallery: Switcher, *, batch: int = 32) -> threading.Thread:
        """:meth:`run` in a daemon thread; poll :meth:`get` for progress."""
        t = threading.Thread(target=self.run, args=(job_id, embed_fn, gallery), kwargs={"batch": batch},
                             name=f"reembed-{job_id[:8]}", daemon=True)
        self.threads = [x for x in self.threads if x.is_alive()] + [t]
        t.start()
        return t

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self.threads):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self.threads = [t for t in self.threads if t.is_alive()]
        return not self.threads

    def recover(self) -> None:
        """Jobs 'running' with no progress for a while belong to a dead process: mark them
        failed so they can be restarted (which resumes where they stopped)."""
        stale = (JobRow.status == "running", JobRow.updated_at < utcnow() - JOB_STALE)
        with self.db.tx() as s:
            if s.scalar(sa.select(sa.func.count()).where(*stale)) == 0:
                return  # the usual case: no write at start-up (a read-only replica can start)
        try:
            with self.db.tx(write=True) as s:
                s.execute(sa.update(JobRow).where(*stale).values(
                    status="failed", error="interrupted (process stopped)", updated_at=utcnow()))
        except StorageUnavailable:
            log.warning("cannot mark interrupted jobs failed: the database is read-only")

    def _refresh_counts(self, job_id: str, collection_id: str, model: str) -> None:
        with self.db.tx() as s:
            total = s.scalar(sa.select(sa.func.count()).where(FaceRow.collection_id == collection_id)) or 0
            done = s.scalar(
                sa.select(sa.func.count()).select_from(EmbeddingRow)
                .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
                .where(FaceRow.collection_id == collection_id, EmbeddingRow.model == model)
            ) or 0
        self._update(job_id, done=int(done), total=int(total))

    def _update(self, job_id: str, **values: Any) -> None:
        values["updated_at"] = utcnow()
        with self.db.tx(write=True) as s:
            s.execute(sa.update(JobRow).where(JobRow.id == job_id).values(**values))

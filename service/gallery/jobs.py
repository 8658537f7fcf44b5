"""Model-switch jobs: re-embed a collection's stored crops with a new recognizer, then flip.

Identify keeps using the old model while the job runs; the flip happens in one
transaction once every face has an embedding of the new model (faces enrolled during
the job are caught by another pass), so a search never runs on a partial index. Jobs are
rows: progress survives a restart.

Ownership: a job row names the process running it (``host:pid:boot``, the boot id being
random per process start) and that process refreshes ``heartbeat_at`` every few seconds.
Another process (a restarted one, a second worker, a replica on another host) decides
whether the owner is dead by :func:`owner_alive`: on the same host a process that no
longer exists, or an earlier life of this very pid (a container restarted as pid 1), is
dead at once; otherwise a heartbeat older than ``HEARTBEAT_TIMEOUT`` is. A dead owner's
job is marked failed ("interrupted") at start-up or when a new switch finds it in the way,
and rerunning it (the service does so at start, see ``service/usecases/collections.py``)
resumes where it stopped: embeddings already written are kept.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
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
HEARTBEAT_S = 5.0  # how often a running job's process says it is alive
HEARTBEAT_TIMEOUT = timedelta(seconds=30)  # silent for this long (6 beats missed): the owner is dead
ACTIVE = ("queued", "running")

_BOOT: tuple[int, str] | None = None


def process_owner() -> str:
    """``host:pid:boot`` of this process; the boot id is new per process (a forked worker too)."""
    global _BOOT
    if _BOOT is None or _BOOT[0] != os.getpid():
        _BOOT = (os.getpid(), uuid.uuid4().hex[:12])
    return f"{socket.gethostname()}:{_BOOT[0]}:{_BOOT[1]}"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def owner_alive(owner: str | None, heartbeat: datetime | None, now: datetime, me: str | None = None) -> bool:
    """Whether the process ``owner`` may still be running its job (see the module docstring)."""
    me = me or process_owner()
    if owner == me:
        return True
    fresh = heartbeat is not None and now - heartbeat < HEARTBEAT_TIMEOUT
    if not owner:
        return fresh  # a row written before owners were recorded: the heartbeat alone decides
    host, _, rest = owner.partition(":")
    pid_text, _, _boot = rest.partition(":")
    my_host, my_pid, _ = me.split(":")
    if host == my_host and pid_text.isdigit():
        pid = int(pid_text)
        if pid == int(my_pid) or not _pid_exists(pid):
            return False  # an earlier life of this pid, or a process that is gone
    return fresh


class Switcher(Protocol):
    """What a job needs from the gallery: writes that keep the indexes in step."""

    def put_embeddings(self, model: str, embeddings: Mapping[int, np.ndarray]) -> int: ...

    def finish_switch(self, collection_id: str, new_model: str, *, drop_old: bool = True) -> Any: ...


def _interrupted(r: JobRow) -> str:
    return (f"interrupted: its process ({r.owner or 'unknown'}) stopped at {r.done}/{r.total} faces; "
            "switching again resumes it (embeddings already made are kept)")


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
            busy = s.scalars(sa.select(JobRow).where(JobRow.collection_id == collection_id,
                                                     JobRow.status.in_(ACTIVE))).first()
            if busy is not None and owner_alive(busy.owner, aware(busy.heartbeat_at), now):
                raise Conflict("a job is already running for this collection", job_id=busy.id)
            if busy is not None:  # its process died: the new job takes over (stored embeddings are kept)
                busy.status, busy.error, busy.updated_at = "failed", _interrupted(busy), now
            total = s.scalar(sa.select(sa.func.count()).where(FaceRow.collection_id == collection_id)) or 0
            row = JobRow(id=uuid.uuid4().hex, kind="reembed", collection_id=collection_id,
                         params={"old_model": coll.model, "new_model": new_model}, status="queued", done=0,
                         total=int(total), created_at=now, updated_at=now, owner=process_owner(),
                         heartbeat_at=now)
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
        job = self._claim(job_id)
        cid, new_model = job.collection_id, job.params["new_model"]
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job_id, stop), name=f"beat-{job_id[:8]}", daemon=True)
        beat.start()
        try:
            return self._run(job_id, cid, new_model, embed_fn, gallery, batch=batch, max_passes=max_passes)
        finally:
            stop.set()
            beat.join()

    def _run(self, job_id: str, cid: str, new_model: str, embed_fn: EmbedFn, gallery: Switcher, *,
             batch: int, max_passes: int) -> Job:
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

    def recover(self) -> list[Job]:
        """Mark the jobs of dead processes failed ("interrupted"), never a live owner's; returns
        them, so the caller can resume them (:meth:`run` continues where they stopped)."""
        now = utcnow()
        with self.db.tx() as s:
            dead = [r.id for r in s.scalars(sa.select(JobRow).where(JobRow.status.in_(ACTIVE)))
                    if not owner_alive(r.owner, aware(r.heartbeat_at), now)]
        if not dead:
            return []  # the usual case: no write at start-up (a read-only replica can start)
        out = []
        try:
            with self.db.tx(write=True) as s:
                for job_id in dead:  # re-checked under the write lock: another process may have claimed it
                    r = s.get(JobRow, job_id)
                    if r is None or r.status not in ACTIVE or owner_alive(r.owner, aware(r.heartbeat_at), now):
                        continue
                    r.status, r.error, r.updated_at = "failed", _interrupted(r), now
                    out.append(job_id)
        except StorageUnavailable:
            log.warning("cannot mark interrupted jobs failed: the database is read-only")
            return []
        for job_id in out:
            log.warning("job %s was interrupted by the end of its process: marked failed", job_id)
        return [self.get(j) for j in out]

    def _claim(self, job_id: str) -> Job:
        """Make this process the job's owner and mark it running, in one transaction: of two
        processes resuming the same job, one gets it and the other a Conflict."""
        now = utcnow()
        with self.db.tx(write=True) as s:
            r = s.get(JobRow, job_id)
            if r is None:
                raise JobNotFound(job_id=job_id)
            if r.status not in ("queued", "failed") or (
                r.status == "queued" and r.owner != process_owner()
                and owner_alive(r.owner, aware(r.heartbeat_at), now)
            ):
                raise Conflict(f"job is {r.status}", job_id=job_id)
            r.status, r.error, r.owner, r.heartbeat_at, r.updated_at = "running", None, process_owner(), now, now
            return job_record(r)

    def _heartbeat(self, job_id: str, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                with self.db.tx(write=True) as s:
                    s.execute(sa.update(JobRow).where(JobRow.id == job_id, JobRow.owner == process_owner())
                              .values(heartbeat_at=utcnow()))
            except Exception:
                log.warning("job %s: heartbeat not written", job_id, exc_info=True)

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

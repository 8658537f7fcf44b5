"""This process's vector indexes, one per (collection, model), kept current by the change log.

An index is built from the database on first use, and brought forward before every
search when the database's revision is ahead of it (another worker, another replica, or a
write whose in-process update never ran). A write made through this process is applied
to its loaded indexes right after the commit (the fast path), without a database read.
The indexes know vectors and ids only; which implementation holds them is the factory's
business (:mod:`service.gallery.vector_index`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from service.errors import ModelMismatch
from service.gallery.changes import Change, ChangeLog, Delta
from service.gallery.vector_index import IndexFactory, VectorIndex

log = logging.getLogger("service.gallery")


@dataclass
class _Slot:
    """In-memory index state of one (collection, model)."""

    epoch: datetime | None = None  # the collection's created_at: a re-created collection is new
    index: VectorIndex | None = None  # None until the first vector (dimension unknown)
    revision: int = -1  # -1 = never built
    mutex: threading.RLock = field(default_factory=threading.RLock)  # build/sync/apply
    rebuilding: bool = False


class IndexCache:
    def __init__(self, changes: ChangeLog, factory: IndexFactory) -> None:
        self.changes = changes
        self.factory = factory
        self._slots: dict[tuple[str, str], _Slot] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lookup
    def get(
        self, collection_id: str, model: str, revision: int | None = None, epoch: datetime | None = None
    ) -> VectorIndex | None:
        """The up-to-date index of (collection, model): built on first use, replayed forward
        when the database's revision (read now unless given) is ahead of it."""
        if revision is None or epoch is None:
            revision, _, epoch = self.changes.head(collection_id)
        slot = self._slot(collection_id, model)
        if slot.revision >= revision and slot.epoch == epoch:
            return slot.index
        with slot.mutex:
            if slot.epoch != epoch or slot.revision < 0:
                self._rebuild(slot, collection_id, model, epoch)
            if slot.revision < revision:
                self._sync(slot, collection_id, model)
            return slot.index

    def revision(self, collection_id: str, model: str) -> int:
        return self._slot(collection_id, model).revision

    def sizes(self) -> dict[str, int]:
        """"collection/model" -> vectors held by this process (for metrics)."""
        with self._lock:
            return {f"{c}/{m}": (sl.index.ntotal if sl.index else 0) for (c, m), sl in self._slots.items()}

    def drop(self, collection_id: str, keep_model: str | None = None) -> None:
        """Forget a collection's indexes (deleted, re-created, or its model switched)."""
        with self._lock:
            for key in [k for k in self._slots if k[0] == collection_id and k[1] != keep_model]:
                del self._slots[key]

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()

    # ------------------------------------------------------------------ writes
    def apply(self, change: Change) -> None:
        """Bring this process's loaded indexes of the collection to ``change.revision``.

        Fast path: an index exactly one revision behind gets the change applied from memory.
        Otherwise (another writer got in between) the log is replayed. Slots never built
        are left alone: their first use builds them from the database.
        """
        cid, rev = change.collection_id, change.revision
        with self._lock:
            slots = [(k[1], sl) for k, sl in self._slots.items() if k[0] == cid]
        for model, slot in slots:
            with slot.mutex:
                if slot.revision < 0 or slot.revision >= rev:
                    continue
                if slot.revision == rev - 1:
                    try:
                        added = change.added
                        if added is not None and added[0] == model:
                            if slot.index is None:
                                slot.index = self.factory(added[1], added[2])
                            else:  # a new face (enroll) cannot be in the index yet
                                slot.index.add(added[1], added[2], replace=change.replace)
                        elif change.removed and slot.index is not None:
                            slot.index.remove(np.asarray(change.removed, np.int64))
                        slot.revision = rev
                        self._maybe_schedule_rebuild(slot, cid, model)
                        continue
                    except ModelMismatch:
                        log.exception("index %s/%s: dimension clash, rebuilding", cid, model)
                        slot.revision = -1
                        continue
                try:
                    self._sync(slot, cid, model)
                except Exception:  # the write is committed; the next read will sync again
                    log.exception("index %s/%s: sync after write failed", cid, model)

    # ------------------------------------------------------------------ maintenance
    def _slot(self, collection_id: str, model: str) -> _Slot:
        with self._lock:
            return self._slots.setdefault((collection_id, model), _Slot())

    def _rebuild(self, slot: _Slot, collection_id: str, model: str, epoch: datetime | None) -> None:
        """Build the slot's index from the database (caller holds ``slot.mutex``)."""
        snap = self.changes.snapshot(collection_id, model)
        slot.index = self.factory(snap.ids, snap.vectors) if snap.dim is not None else None
        slot.revision = snap.revision
        slot.epoch = epoch
        if slot.index is not None:
            log.info("gallery index %s/%s built: %s, %d vectors, %.2fs", collection_id, model,
                     slot.index.kind, slot.index.ntotal, slot.index.build_seconds)

    def _sync(self, slot: _Slot, collection_id: str, model: str) -> None:
        """Replay the log after ``slot.revision`` onto the slot (holding ``slot.mutex``)."""
        delta = self.changes.since(collection_id, model, slot.revision)
        if delta is None:  # log pruned past us: rebuild from scratch
            self._rebuild(slot, collection_id, model, slot.epoch)
            return
        self._replay(slot, delta)
        slot.revision = max(slot.revision, delta.target)
        self._maybe_schedule_rebuild(slot, collection_id, model)

    def _replay(self, slot: _Slot, delta: Delta) -> None:
        if slot.index is None:
            if len(delta.add_ids):
                slot.index = self.factory(delta.add_ids, delta.add_vectors)
            return
        slot.index.apply(np.asarray(delta.touched, np.int64), delta.add_ids, delta.add_vectors)

    def _maybe_schedule_rebuild(self, slot: _Slot, collection_id: str, model: str) -> None:
        """Rebuild in a background thread when the index grew out of its kind; searches use
        the current index meanwhile, and the new one is caught up before the swap."""
        if slot.index is None or slot.rebuilding or not slot.index.needs_rebuild():
            return
        slot.rebuilding = True
        epoch = slot.epoch

        def work() -> None:
            try:
                snap = self.changes.snapshot(collection_id, model)
                new = self.factory(snap.ids, snap.vectors) if snap.dim is not None else None
                with slot.mutex:
                    if slot.epoch != epoch:
                        return
                    delta = self.changes.since(collection_id, model, snap.revision)
                    if delta is None:
                        slot.revision = -1  # next use rebuilds synchronously
                        return
                    tmp = _Slot(epoch=epoch, index=new, revision=snap.revision)
                    self._replay(tmp, delta)
                    slot.index, slot.revision = tmp.index, max(snap.revision, delta.target)
                    log.info("gallery index %s/%s rebuilt as %s (%d vectors)", collection_id, model,
                             new.kind if new else None, new.ntotal if new else 0)
            except Exception:
                log.exception("background rebuild of %s/%s failed", collection_id, model)
            finally:
                slot.rebuilding = False

        self.spawn(work, f"index-rebuild-{collection_id}")

    # ------------------------------------------------------------------ threads
    def spawn(self, target: Any, name: str) -> threading.Thread:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()
        return t

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for background rebuilds; True if all finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._threads):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        return not self._threads

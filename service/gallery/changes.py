"""The change log that connects the SQL store (rows) with the vector indexes (ids and vectors).

Every write that changes which embeddings exist bumps ``collections.revision`` (a row
lock: such writes are serialised per collection, across processes too) and records the
touched face ids in ``index_log`` under that revision, *in the same transaction* (an
outbox). A process whose index of a collection is behind the database's revision replays
the log. So an enroll committed by another worker or replica, or one whose in-process
index update never happened (a crash between commit and update), is found on the next
search; and an index entry can only exist for a committed row, because indexes are built
from and replayed against committed rows only.

Replay is state-based (the touched faces' *current* rows are re-read), so it is
idempotent and needs no particular isolation level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.errors import CollectionNotFound
from service.gallery.vectors import chunks, from_blobs
from service.storage import Database
from service.storage.schema import CollectionRow, EmbeddingRow, FaceRow, IndexLogRow

LOG_PRUNE_EVERY = 1024  # revisions between prunes of index_log
LOG_KEEP = 8192  # revisions of index_log kept; a process further behind rebuilds


@dataclass(frozen=True)
class Change:
    """What one committed write did to a collection's vectors, for the indexes to follow."""

    collection_id: str
    revision: int
    added: tuple[str, np.ndarray, np.ndarray] | None = None  # (model, face ids, vectors)
    removed: tuple[int, ...] = ()
    replace: bool = False  # an added id may already be indexed (a re-embed overwrote it)


@dataclass(frozen=True)
class Delta:
    """Changes after some revision, replayed state-based: drop ``touched``, add what exists now."""

    target: int  # the revision these changes bring an index to
    touched: list[int]
    add_ids: np.ndarray
    add_vectors: np.ndarray


@dataclass(frozen=True)
class Snapshot:
    """Every stored embedding of one (collection, model), at least as new as ``revision``."""

    revision: int
    ids: np.ndarray
    vectors: np.ndarray
    dim: int | None


class ChangeLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def bump(s: Session, collection_id: str) -> tuple[int, str, datetime]:
        """Take the collection's write lock by bumping its revision (the first statement of
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
        if rev % LOG_PRUNE_EVERY == 0:
            s.execute(
                sa.delete(IndexLogRow).where(
                    IndexLogRow.collection_id == collection_id, IndexLogRow.revision <= rev - LOG_KEEP
                )
            )
        return rev, row[1], row[2]

    @staticmethod
    def record(s: Session, collection_id: str, rev: int, face_ids: Sequence[int], op: str) -> None:
        """Record touched faces under ``rev`` ('a' = (re)embedded, 'd' = deleted). Every bumped
        revision gets at least one row (face id 0, a no-op, when none were touched), so a gap
        in the revisions means 'pruned'."""
        rows = [
            {"collection_id": collection_id, "revision": rev, "face_id": int(f), "op": op} for f in face_ids
        ]
        if not rows:
            rows = [{"collection_id": collection_id, "revision": rev, "face_id": 0, "op": "n"}]
        for chunk in chunks(rows, 1000):
            s.execute(sa.insert(IndexLogRow), list(chunk))

    def head(self, collection_id: str) -> tuple[int, str, datetime]:
        """(revision, active model, epoch) of a collection as committed now."""
        with self.db.tx() as s:
            row = s.get(CollectionRow, collection_id)
            if row is None:
                raise CollectionNotFound(collection_id=collection_id)
            return int(row.revision), row.model, row.created_at

    def snapshot(self, collection_id: str, model: str) -> Snapshot:
        """Every stored embedding of (collection, model). The revision is read *before* the
        vectors, so the snapshot is at least as new as it; replaying from there is
        idempotent, so this is correct under READ COMMITTED too."""
        rev = self.head(collection_id)[0]
        ids: list[int] = []
        blocks: list[np.ndarray] = []  # decoded per partition: peak memory ~ 1x the vectors
        dim: int | None = None
        with self.db.tx() as s:
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
                blocks.append(from_blobs([r[1] for r in part], dim))
        if not ids:
            return Snapshot(rev, np.zeros(0, np.int64), np.zeros((0, 0), np.float32), None)
        return Snapshot(rev, np.asarray(ids, np.int64), np.concatenate(blocks), dim)

    def since(self, collection_id: str, model: str, since: int) -> Delta | None:
        """The changes after revision ``since``; None if the log no longer reaches back to it."""
        with self.db.tx() as s:
            rows = s.execute(
                sa.select(IndexLogRow.revision, IndexLogRow.face_id)
                .where(IndexLogRow.collection_id == collection_id, IndexLogRow.revision > since)
                .order_by(IndexLogRow.revision)
            ).all()
            if not rows:
                return Delta(since, [], np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
            if rows[0][0] != since + 1:
                return None
            touched = sorted({int(r[1]) for r in rows if r[1]})
            add_ids: list[int] = []
            vecs: list[bytes] = []
            dim = 0
            for chunk in chunks(touched):
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
        mat = from_blobs(vecs, dim) if add_ids else np.zeros((0, 0), np.float32)
        return Delta(int(rows[-1][0]), touched, np.asarray(add_ids, np.int64), mat)

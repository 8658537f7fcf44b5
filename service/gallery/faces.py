"""Faces and their embeddings as rows: enroll, read, delete, re-embed, and the lookups search needs.

A face row keeps its aligned crop (PNG) so a model switch can re-embed without the
original upload; embeddings are stored per (face, model). Every write that changes which
embeddings exist goes through the change log in the same transaction and returns the
:class:`~service.gallery.changes.Change` for the indexes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from service.errors import FaceNotFound, InvalidRequest, ModelMismatch
from service.gallery.changes import Change, ChangeLog
from service.gallery.crops import decode_crop, encode_crop
from service.gallery.records import EnrollFace, FaceRecord
from service.gallery.store import aware, identity_row, require_collection
from service.gallery.vectors import chunks, from_blobs, normalise
from service.storage import Database
from service.storage.schema import EmbeddingRow, FaceRow, IdentityRow, utcnow


def face_record(r: FaceRow, models: tuple[str, ...] = ()) -> FaceRecord:
    return FaceRecord(id=int(r.id), identity_id=r.identity_id, collection_id=r.collection_id, bbox=r.bbox,
                      landmarks=r.landmarks, det_score=r.det_score, quality=r.quality,
                      image_sha256=r.image_sha256, created_at=aware(r.created_at),  # type: ignore[arg-type]
                      models=tuple(models))


def stored_dim(s: Session, collection_id: str, model: str) -> int | None:
    return s.scalar(
        sa.select(EmbeddingRow.dim)
        .join(FaceRow, FaceRow.id == EmbeddingRow.face_id)
        .where(FaceRow.collection_id == collection_id, EmbeddingRow.model == model)
        .limit(1)
    )


def check_dim(s: Session, collection_id: str, model: str, dim: int) -> None:
    have = stored_dim(s, collection_id, model)
    if have is not None and have != dim:
        raise ModelMismatch(f"embedding dimension {dim} differs from the collection's {have}",
                            expected_dim=have, got_dim=dim)


class FaceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enroll(self, collection_id: str, identity_id: str, faces: Sequence[EnrollFace]) -> tuple[list[FaceRecord], Change]:
        """Store faces (crop, metadata, embedding) of an identity in one transaction.

        Raises ModelMismatch if an embedding's model is not the collection's active model
        or its dimension differs from the embeddings already stored for it.
        """
        if not faces:
            raise InvalidRequest("no faces to enroll")
        models = {f.model for f in faces}
        vecs = normalise(np.stack([np.asarray(f.embedding, np.float32).ravel() for f in faces]))
        pngs = [encode_crop(f.crop) for f in faces]  # outside the transaction: CPU work
        dim = int(vecs.shape[1])
        now = utcnow()
        with self.db.tx(write=True) as s:
            rev, active, _ = ChangeLog.bump(s, collection_id)
            if models != {active}:
                raise ModelMismatch("embeddings must come from the collection's active model",
                                    active_model=active, got=sorted(models))
            identity_row(s, collection_id, identity_id)
            check_dim(s, collection_id, active, dim)
            rows = [
                FaceRow(
                    identity_id=identity_id, collection_id=collection_id, crop_png=png,
                    bbox=[float(v) for v in f.bbox] if f.bbox is not None else None,
                    landmarks=[[float(a) for a in p] for p in f.landmarks] if f.landmarks is not None else None,
                    det_score=float(f.det_score) if f.det_score is not None else None,
                    quality=dict(f.quality) if f.quality is not None else None,
                    image_sha256=f.image_sha256, created_at=now,
                )
                for f, png in zip(faces, pngs)
            ]
            s.add_all(rows)
            s.flush()  # assigns face ids (= index ids)
            s.add_all(EmbeddingRow(face_id=r.id, model=active, dim=dim, vector=v.tobytes()) for r, v in zip(rows, vecs))
            ChangeLog.record(s, collection_id, rev, [r.id for r in rows], "a")
            s.execute(sa.update(IdentityRow).where(IdentityRow.id == identity_id).values(updated_at=now))
        ids = np.array([r.id for r in rows], np.int64)
        return [face_record(r, (active,)) for r in rows], Change(collection_id, rev, added=(active, ids, vecs))

    def list_faces(self, collection_id: str, identity_id: str) -> list[FaceRecord]:
        """Faces of an identity, oldest first (crops are not loaded; see crop())."""
        with self.db.tx() as s:
            identity_row(s, collection_id, identity_id)
            rows = s.execute(
                sa.select(FaceRow).options(defer(FaceRow.crop_png))
                .where(FaceRow.identity_id == identity_id).order_by(FaceRow.id)
            ).scalars().all()
            models = self._models(s, [r.id for r in rows])
            return [face_record(r, models.get(r.id, ())) for r in rows]

    def get_face(self, collection_id: str, face_id: int) -> FaceRecord:
        with self.db.tx() as s:
            row = self._row(s, collection_id, face_id)
            return face_record(row, self._models(s, [row.id]).get(row.id, ()))

    def crop(self, collection_id: str, face_id: int) -> bytes:
        """The stored aligned crop as PNG bytes."""
        with self.db.tx() as s:
            return bytes(self._row(s, collection_id, face_id).crop_png)

    def delete_face(self, collection_id: str, face_id: int) -> Change:
        with self.db.tx(write=True) as s:
            rev = ChangeLog.bump(s, collection_id)[0]
            self._row(s, collection_id, face_id)
            ChangeLog.record(s, collection_id, rev, [int(face_id)], "d")
            s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id == int(face_id)))
            s.execute(sa.delete(FaceRow).where(FaceRow.id == int(face_id)))
        self.db.erase_deleted()
        return Change(collection_id, rev, removed=(int(face_id),))

    # ------------------------------------------------------------------ embeddings
    def embeddings(self, collection_id: str, identity_id: str, model: str) -> np.ndarray:
        """The identity's stored embeddings of ``model`` as an (n, D) float32 array. (0, 0) if
        it has no faces; ModelMismatch if it has faces but none embedded with ``model``."""
        with self.db.tx() as s:
            identity_row(s, collection_id, identity_id)
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
        return from_blobs([r[0] for r in rows], rows[0][1]).copy()

    def embeddings_of(self, identity_ids: Sequence[str], model: str) -> dict[str, np.ndarray]:
        """Every stored ``model`` embedding of each identity (for per-identity aggregation)."""
        per: dict[str, list[bytes]] = defaultdict(list)
        dims: dict[str, int] = {}
        with self.db.tx() as s:
            for chunk in chunks(sorted(set(identity_ids))):
                for iid, vec, dim in s.execute(
                    sa.select(FaceRow.identity_id, EmbeddingRow.vector, EmbeddingRow.dim)
                    .join(EmbeddingRow, EmbeddingRow.face_id == FaceRow.id)
                    .where(FaceRow.identity_id.in_(chunk), EmbeddingRow.model == model)
                ):
                    per[iid].append(vec)
                    dims[iid] = dim
        return {iid: from_blobs(v, dims[iid]) for iid, v in per.items()}

    def owners(self, collection_id: str, face_ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """face id -> (identity id, external id, name) for the faces that still exist in the
        collection (a face deleted since a search is simply absent)."""
        out: dict[int, tuple[str, str, str]] = {}
        with self.db.tx() as s:
            for chunk in chunks(list(face_ids)):
                for fid, iid, ext, name in s.execute(
                    sa.select(FaceRow.id, FaceRow.identity_id, IdentityRow.external_id, IdentityRow.name)
                    .join(IdentityRow, IdentityRow.id == FaceRow.identity_id)
                    .where(FaceRow.id.in_(chunk), FaceRow.collection_id == collection_id)
                ):
                    out[int(fid)] = (iid, ext, name)
        return out

    def put_embeddings(self, model: str, embeddings: Mapping[int, np.ndarray]) -> tuple[int, list[Change]]:
        """Store (or replace) embeddings of ``model`` for existing faces; (how many were
        stored, one change per collection). Faces deleted meanwhile are skipped."""
        if not embeddings:
            return 0, []
        fids = [int(f) for f in embeddings]
        vecs = normalise(np.stack([np.asarray(embeddings[f], np.float32).ravel() for f in embeddings]))
        dim = int(vecs.shape[1])
        by_face = dict(zip(fids, vecs))
        with self.db.tx() as s:
            owner = {int(a): b for chunk in chunks(fids) for a, b in s.execute(
                sa.select(FaceRow.id, FaceRow.collection_id).where(FaceRow.id.in_(chunk)))}
        per_coll: dict[str, list[int]] = defaultdict(list)
        for f in fids:
            if f in owner:
                per_coll[owner[f]].append(f)
        stored, changes = 0, []
        for cid, ids in per_coll.items():
            with self.db.tx(write=True) as s:
                rev = ChangeLog.bump(s, cid)[0]
                check_dim(s, cid, model, dim)
                # still there? (deleted between the lookup and this transaction)
                alive = [int(x) for chunk in chunks(ids) for x in s.scalars(sa.select(FaceRow.id).where(FaceRow.id.in_(chunk)))]
                for chunk in chunks(alive):
                    s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id.in_(chunk), EmbeddingRow.model == model))
                if alive:
                    s.execute(sa.insert(EmbeddingRow), [
                        {"face_id": f, "model": model, "dim": dim, "vector": by_face[f].tobytes()} for f in alive])
                ChangeLog.record(s, cid, rev, alive, "a")
            stored += len(alive)
            added = (model, np.asarray(alive, np.int64), np.stack([by_face[f] for f in alive])) if alive else None
            # replace: a re-embed may overwrite an embedding that is already indexed
            changes.append(Change(cid, rev, added=added, replace=True))
        return stored, changes

    def iter_crops(
        self, collection_id: str, batch: int = 64, *, missing_model: str | None = None, decode: bool = True
    ) -> Iterator[list[tuple[int, np.ndarray | bytes]]]:
        """Lists of (face id, crop) in face-id order, ``batch`` at a time; with
        ``missing_model`` only faces lacking an embedding of that model. Each batch is its
        own short read, so enrolls are never blocked by a long re-embed."""
        last = 0
        while True:
            with self.db.tx() as s:
                require_collection(s, collection_id)
                q = sa.select(FaceRow.id, FaceRow.crop_png).where(FaceRow.collection_id == collection_id,
                                                                   FaceRow.id > last)
                if missing_model is not None:
                    has = sa.select(EmbeddingRow.face_id).where(EmbeddingRow.face_id == FaceRow.id,
                                                                EmbeddingRow.model == missing_model)
                    q = q.where(~has.exists())
                rows = s.execute(q.order_by(FaceRow.id).limit(int(batch))).all()
            if not rows:
                return
            last = int(rows[-1][0])
            yield [(int(fid), decode_crop(png) if decode else bytes(png)) for fid, png in rows]

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _row(s: Session, collection_id: str, face_id: int) -> FaceRow:
        try:
            fid = int(face_id)
        except (TypeError, ValueError) as e:
            raise FaceNotFound(face_id=str(face_id)) from e
        row = s.get(FaceRow, fid)
        if row is None or row.collection_id != collection_id:
            require_collection(s, collection_id)
            raise FaceNotFound(face_id=fid)
        return row

    @staticmethod
    def _models(s: Session, face_ids: list[int]) -> dict[int, tuple[str, ...]]:
        out: dict[int, list[str]] = defaultdict(list)
        for chunk in chunks(face_ids):
            for fid, model in s.execute(
                sa.select(EmbeddingRow.face_id, EmbeddingRow.model)
                .where(EmbeddingRow.face_id.in_(chunk)).order_by(EmbeddingRow.model)
            ):
                out[fid].append(model)
        return {k: tuple(v) for k, v in out.items()}

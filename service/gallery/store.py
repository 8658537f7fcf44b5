"""Collections and identities as rows: create, read, page, update, delete.

Writes are single transactions; deleting an identity also deletes its faces and
embeddings and records them in the change log in the same transaction, returning the
:class:`~service.gallery.changes.Change` the indexes must follow.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from service.errors import CollectionNotFound, Conflict, IdentityNotFound, InvalidRequest
from service.gallery.changes import Change, ChangeLog
from service.gallery.limits import MAX_EXTERNAL_ID, check_metadata, check_name, readable_metadata
from service.gallery.records import Collection, Identity, Page
from service.gallery.vectors import chunks
from service.storage import Database
from service.storage.schema import (
    CollectionRow,
    EmbeddingRow,
    FaceRow,
    IdentityRow,
    IndexLogRow,
    JobRow,
    utcnow,
)

COLLECTION_ID_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


def aware(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


def encode_cursor(created_at: datetime, ident: str) -> str:
    raw = json.dumps([aware(created_at).isoformat(), ident]).encode()  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, ident = json.loads(raw)
        return datetime.fromisoformat(ts), str(ident)
    except Exception as e:
        raise InvalidRequest("invalid cursor") from e


def require_collection(s: Session, collection_id: str) -> CollectionRow:
    row = s.get(CollectionRow, collection_id)
    if row is None:
        raise CollectionNotFound(collection_id=collection_id)
    return row


def identity_row(s: Session, collection_id: str, identity_id: str) -> IdentityRow:
    row = s.get(IdentityRow, identity_id)
    if row is None or row.collection_id != collection_id:
        require_collection(s, collection_id)
        raise IdentityNotFound(identity_id=identity_id)
    return row


def check_external_id(external_id: str) -> None:
    if not isinstance(external_id, str) or not 1 <= len(external_id) <= MAX_EXTERNAL_ID:
        raise InvalidRequest(f"external_id must be a string of 1-{MAX_EXTERNAL_ID} characters")


def collection_record(r: CollectionRow, n_id: int | None = None, n_f: int | None = None) -> Collection:
    return Collection(id=r.id, name=r.name, model=r.model, metadata=readable_metadata(r.meta),
                      created_at=aware(r.created_at), identities=n_id, faces=n_f)  # type: ignore[arg-type]


def identity_record(r: IdentityRow, faces: int | None = None) -> Identity:
    return Identity(id=r.id, collection_id=r.collection_id, external_id=r.external_id, name=r.name,
                    metadata=readable_metadata(r.meta), created_at=aware(r.created_at),  # type: ignore[arg-type]
                    updated_at=aware(r.updated_at), faces=faces)  # type: ignore[arg-type]


class GalleryStore:
    def __init__(self, db: Database, default_model: str) -> None:
        self.db = db
        self.default_model = default_model

    # ------------------------------------------------------------------ collections
    def create_collection(
        self, collection_id: str, name: str = "", model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Collection:
        """``model`` (default: the configured recognizer) is the only model whose embeddings
        the collection accepts until a switch. Conflict if the id exists."""
        if not isinstance(collection_id, str) or not COLLECTION_ID_RE.match(collection_id):
            raise InvalidRequest("collection id must match [a-z0-9_-]{1,64}", collection_id=str(collection_id))
        check_name(name)
        check_metadata(dict(metadata or {}))
        with self.db.tx(write=True) as s:
            if s.get(CollectionRow, collection_id) is not None:
                raise Conflict("collection already exists", collection_id=collection_id)
            row = CollectionRow(id=collection_id, name=name or "", model=model or self.default_model,
                                meta=dict(metadata or {}), revision=0, created_at=utcnow())
            s.add(row)
        return collection_record(row, 0, 0)

    def get_collection(self, collection_id: str) -> Collection:
        with self.db.tx() as s:
            row = require_collection(s, collection_id)
            n_id = s.scalar(sa.select(sa.func.count()).where(IdentityRow.collection_id == collection_id))
            n_f = s.scalar(sa.select(sa.func.count()).where(FaceRow.collection_id == collection_id))
            return collection_record(row, n_id or 0, n_f or 0)

    def list_collections(self, *, counts: bool = True) -> list[Collection]:
        """All collections ordered by id, with identity and face counts."""
        with self.db.tx() as s:
            rows = s.scalars(sa.select(CollectionRow).order_by(CollectionRow.id)).all()
            if not counts:
                return [collection_record(r) for r in rows]
            ids, faces = self.counts(s)
            return [collection_record(r, ids.get(r.id, 0), faces.get(r.id, 0)) for r in rows]

    def update_collection(
        self, collection_id: str, *, name: str | None = None, metadata: Mapping[str, Any] | None = None
    ) -> Collection:
        """Change the display name and/or replace the metadata (the model changes only by a switch)."""
        if name is not None:
            check_name(name)
        if metadata is not None:
            check_metadata(dict(metadata))
        with self.db.tx(write=True) as s:
            row = require_collection(s, collection_id)
            if name is not None:
                row.name = name
            if metadata is not None:
                row.meta = dict(metadata)
        return self.get_collection(collection_id)

    def delete_collection(self, collection_id: str) -> None:
        """Delete a collection with all its identities, faces, embeddings, log and jobs."""
        with self.db.tx(write=True) as s:
            require_collection(s, collection_id)
            # Explicit deletes (children first) rather than relying on ON DELETE CASCADE
            # alone: it keeps the statement count small and works whatever the FK pragma.
            face_ids = sa.select(FaceRow.id).where(FaceRow.collection_id == collection_id)
            s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id.in_(face_ids)))
            for model in (FaceRow, IdentityRow, IndexLogRow, JobRow):
                s.execute(sa.delete(model).where(model.collection_id == collection_id))
            s.execute(sa.delete(CollectionRow).where(CollectionRow.id == collection_id))
        self.db.erase_deleted()

    @staticmethod
    def counts(s: Session) -> tuple[dict[str, int], dict[str, int]]:
        """Identities and faces per collection id, in two grouped queries."""
        ids = sa.select(IdentityRow.collection_id, sa.func.count()).group_by(IdentityRow.collection_id)
        faces = sa.select(FaceRow.collection_id, sa.func.count()).group_by(FaceRow.collection_id)
        return dict(s.execute(ids).tuples().all()), dict(s.execute(faces).tuples().all())

    # ------------------------------------------------------------------ identities
    def create_identity(
        self, collection_id: str, external_id: str, name: str = "", metadata: Mapping[str, Any] | None = None
    ) -> Identity:
        """Create a person. ``external_id`` (any unicode, 1-256 chars) is unique per collection."""
        check_external_id(external_id)
        check_name(name)
        check_metadata(dict(metadata or {}))
        now = utcnow()
        with self.db.tx(write=True) as s:
            require_collection(s, collection_id)
            self._refuse_duplicate(s, collection_id, external_id)
            row = IdentityRow(id=uuid.uuid4().hex, collection_id=collection_id, external_id=external_id,
                              name=name or "", meta=dict(metadata or {}), created_at=now, updated_at=now)
            s.add(row)
        return identity_record(row, 0)

    def get_identity(self, collection_id: str, identity_id: str) -> Identity:
        with self.db.tx() as s:
            row = identity_row(s, collection_id, identity_id)
            n = s.scalar(sa.select(sa.func.count()).where(FaceRow.identity_id == identity_id))
            return identity_record(row, n or 0)

    def get_identity_by_external_id(self, collection_id: str, external_id: str) -> Identity:
        with self.db.tx() as s:
            row = s.scalar(sa.select(IdentityRow).where(
                IdentityRow.collection_id == collection_id, IdentityRow.external_id == external_id))
            if row is None:
                require_collection(s, collection_id)
                raise IdentityNotFound(external_id=external_id)
            n = s.scalar(sa.select(sa.func.count()).where(FaceRow.identity_id == row.id))
            return identity_record(row, n or 0)

    def list_identities(self, collection_id: str, limit: int = 100, cursor: str | None = None) -> Page:
        """A page of identities in creation order (keyset pagination: stable under
        concurrent inserts and deletes, O(limit) at any depth). ``Page.items`` are
        :class:`Identity`; pass ``Page.next_cursor`` to get the next page (None = last)."""
        if not 1 <= int(limit) <= 1000:
            raise InvalidRequest("limit must be between 1 and 1000")
        with self.db.tx() as s:
            require_collection(s, collection_id)
            q = sa.select(IdentityRow).where(IdentityRow.collection_id == collection_id)
            if cursor:
                ts, last = decode_cursor(cursor)
                q = q.where(sa.or_(IdentityRow.created_at > ts,
                                   sa.and_(IdentityRow.created_at == ts, IdentityRow.id > last)))
            rows = s.scalars(q.order_by(IdentityRow.created_at, IdentityRow.id).limit(int(limit) + 1)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            counts = dict(s.execute(
                sa.select(FaceRow.identity_id, sa.func.count())
                .where(FaceRow.identity_id.in_([r.id for r in rows]))
                .group_by(FaceRow.identity_id)
            ).all()) if rows else {}
            items = [identity_record(r, counts.get(r.id, 0)) for r in rows]
        nxt = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return Page(items=items, next_cursor=nxt)

    def update_identity(
        self, collection_id: str, identity_id: str, *, external_id: str | None = None,
        name: str | None = None, metadata: Mapping[str, Any] | None = None,
    ) -> Identity:
        """Change external id, name and/or replace metadata (None = leave as is)."""
        if external_id is not None:
            check_external_id(external_id)
        if name is not None:
            check_name(name)
        if metadata is not None:
            check_metadata(dict(metadata))
        with self.db.tx(write=True) as s:
            row = identity_row(s, collection_id, identity_id)
            if external_id is not None and external_id != row.external_id:
                self._refuse_duplicate(s, collection_id, external_id)
                row.external_id = external_id
            if name is not None:
                row.name = name
            if metadata is not None:
                row.meta = dict(metadata)
            row.updated_at = utcnow()
        return self.get_identity(collection_id, identity_id)

    def delete_identity(self, collection_id: str, identity_id: str) -> tuple[int, Change]:
        """Delete an identity with its faces and embeddings; (faces removed, the change)."""
        with self.db.tx(write=True) as s:
            rev = ChangeLog.bump(s, collection_id)[0]
            identity_row(s, collection_id, identity_id)
            face_ids = [int(f) for f in s.scalars(sa.select(FaceRow.id).where(FaceRow.identity_id == identity_id))]
            ChangeLog.record(s, collection_id, rev, face_ids, "d")
            if face_ids:
                for chunk in chunks(face_ids):
                    s.execute(sa.delete(EmbeddingRow).where(EmbeddingRow.face_id.in_(chunk)))
                s.execute(sa.delete(FaceRow).where(FaceRow.identity_id == identity_id))
            s.execute(sa.delete(IdentityRow).where(IdentityRow.id == identity_id))
        self.db.erase_deleted()
        return len(face_ids), Change(collection_id, rev, removed=tuple(face_ids))

    @staticmethod
    def _refuse_duplicate(s: Session, collection_id: str, external_id: str) -> None:
        dup = s.scalar(sa.select(IdentityRow.id).where(
            IdentityRow.collection_id == collection_id, IdentityRow.external_id == external_id))
        if dup is not None:
            raise Conflict("external_id already exists in this collection", identity_id=dup)

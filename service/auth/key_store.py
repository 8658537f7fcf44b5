"""API-key rows: the public prefix, the hash of the whole key, scopes, collections, state."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from service.errors import InvalidRequest, NotFound
from service.storage import Database
from service.storage.schema import ApiKeyRow, utcnow


@dataclass(frozen=True)
class ApiKey:
    id: str
    prefix: str
    key_hash: str
    name: str
    scopes: list[str]
    collections: list[str] | None  # None = every collection
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _aware(dt: datetime | None) -> datetime | None:
    return dt.replace(tzinfo=timezone.utc) if dt is not None and dt.tzinfo is None else dt


def _record(r: ApiKeyRow) -> ApiKey:
    return ApiKey(id=r.id, prefix=r.prefix, key_hash=r.key_hash, name=r.name, scopes=list(r.scopes or []),
                  collections=list(r.collections) if r.collections is not None else None,
                  created_at=_aware(r.created_at), revoked_at=_aware(r.revoked_at),  # type: ignore[arg-type]
                  last_used_at=_aware(r.last_used_at))


class ApiKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, prefix: str, key_hash: str, scopes: Sequence[str],
               collections: Sequence[str] | None = None) -> ApiKey:
        """Store a key's public prefix and hash (the caller generates and hashes the secret)."""
        if not prefix or not key_hash:
            raise InvalidRequest("prefix and key_hash are required")
        row = ApiKeyRow(id=uuid.uuid4().hex, prefix=prefix, key_hash=key_hash, name=name or "",
                        scopes=list(scopes), collections=list(collections) if collections is not None else None,
                        created_at=utcnow())
        with self.db.tx(write=True) as s:
            s.add(row)
        return _record(row)

    def find_by_prefix(self, prefix: str, *, include_revoked: bool = False) -> list[ApiKey]:
        """Candidate keys for an incoming secret; the caller compares hashes in constant time."""
        with self.db.tx() as s:
            q = sa.select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)
            if not include_revoked:
                q = q.where(ApiKeyRow.revoked_at.is_(None))
            return [_record(r) for r in s.scalars(q.order_by(ApiKeyRow.created_at))]

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        with self.db.tx() as s:
            q = sa.select(ApiKeyRow)
            if not include_revoked:
                q = q.where(ApiKeyRow.revoked_at.is_(None))
            return [_record(r) for r in s.scalars(q.order_by(ApiKeyRow.created_at, ApiKeyRow.id))]

    def get(self, key_id: str) -> ApiKey:
        with self.db.tx() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound("No API key with that id.", key_id=key_id)
            return _record(row)

    def revoke(self, key_id: str) -> ApiKey:
        """Mark a key revoked (kept for audit). Revoking twice keeps the first time."""
        with self.db.tx(write=True) as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound("No API key with that id.", key_id=key_id)
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return _record(row)

    def touch(self, key_id: str, *, min_interval_s: float = 60.0) -> None:
        """Record use of a key. At most one write per key per ``min_interval_s`` so that
        authentication does not turn every read request into a database write."""
        now = utcnow()
        cutoff = now - timedelta(seconds=min_interval_s)
        with self.db.tx(write=True) as s:
            s.execute(sa.update(ApiKeyRow).where(
                ApiKeyRow.id == key_id,
                sa.or_(ApiKeyRow.last_used_at.is_(None), ApiKeyRow.last_used_at < cutoff),
            ).values(last_used_at=now))

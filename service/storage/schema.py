"""ORM schema of the one database (gallery rows, change log, jobs, API keys); the source of truth.

The same declarative classes serve SQLite and PostgreSQL. The schema itself is
created and evolved only by the alembic migrations in ``migrations/``; these classes
must stay in step with them (a test compares the two).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: JSON column: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")

#: Face ids are FAISS ids: 64-bit everywhere. SQLite needs plain INTEGER for its rowid alias.
FaceIdType = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Timezone-aware UTC now; stored as UTC and returned as aware datetimes."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class CollectionRow(Base):
    __tablename__ = "collections"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    model: Mapped[str] = mapped_column(String(128))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    #: Bumped (row-locked) by every write that changes which embeddings exist; it
    #: serialises index-relevant writes per collection across processes and orders the
    #: ``index_log`` so every process can bring its FAISS copy up to date.
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdentityRow(Base):
    __tablename__ = "identities"
    __table_args__ = (
        UniqueConstraint("collection_id", "external_id", name="uq_identities_collection_external"),
        Index("ix_identities_collection_created", "collection_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256), default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FaceRow(Base):
    __tablename__ = "faces"
    # AUTOINCREMENT on SQLite: a deleted max id is never handed out again, so a face id
    # (= FAISS id, = index_log key) always names one face for the life of the database.
    __table_args__ = (
        Index("ix_faces_identity", "identity_id"),
        Index("ix_faces_collection", "collection_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(FaceIdType, primary_key=True, autoincrement=True)
    identity_id: Mapped[str] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    crop_png: Mapped[bytes] = mapped_column(LargeBinary)
    bbox: Mapped[list[float] | None] = mapped_column(JSONType, nullable=True)
    landmarks: Mapped[list[list[float]] | None] = mapped_column(JSONType, nullable=True)
    det_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    image_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EmbeddingRow(Base):
    __tablename__ = "embeddings"
    __table_args__ = (Index("ix_embeddings_model", "model", "face_id"),)

    face_id: Mapped[int] = mapped_column(
        FaceIdType, ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class IndexLogRow(Base):
    """Which faces changed at which collection revision ('a' = (re)embedded, 'd' = deleted).

    Readers replay it state-based (re-read the current rows of the touched faces), so
    replay is idempotent and needs no particular isolation level.
    """

    __tablename__ = "index_log"

    collection_id: Mapped[str] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    face_id: Mapped[int] = mapped_column(FaceIdType, primary_key=True)
    op: Mapped[str] = mapped_column(String(1))


class RateWindowRow(Base):
    """Requests counted for one rate-limit bucket (an API key) in one minute, all processes together."""

    __tablename__ = "rate_windows"

    bucket: Mapped[str] = mapped_column(String(128), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # minutes since the epoch
    n: Mapped[int] = mapped_column(BigInteger)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_prefix", "prefix"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256), default="")
    scopes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    collections: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_collection", "collection_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: ``host:pid:boot`` of the process running the job (see ``service/gallery/jobs.py``), and
    #: when it last said it was alive.
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

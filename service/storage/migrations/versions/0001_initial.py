"""Initial gallery schema: collections, identities, faces, embeddings, index_log, api_keys, jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
FaceId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "identities",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "collection_id",
            sa.String(64),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("metadata", JSONType, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("collection_id", "external_id", name="uq_identities_collection_external"),
    )
    op.create_index("ix_identities_collection_created", "identities", ["collection_id", "created_at", "id"])
    op.create_table(
        "faces",
        sa.Column("id", FaceId, primary_key=True, autoincrement=True),
        sa.Column(
            "identity_id", sa.String(32), sa.ForeignKey("identities.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "collection_id",
            sa.String(64),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("crop_png", sa.LargeBinary(), nullable=False),
        sa.Column("bbox", JSONType, nullable=True),
        sa.Column("landmarks", JSONType, nullable=True),
        sa.Column("det_score", sa.Float(), nullable=True),
        sa.Column("quality", JSONType, nullable=True),
        sa.Column("image_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_faces_identity", "faces", ["identity_id"])
    op.create_index("ix_faces_collection", "faces", ["collection_id"])
    op.create_table(
        "embeddings",
        sa.Column("face_id", FaceId, sa.ForeignKey("faces.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_embeddings_model", "embeddings", ["model", "face_id"])
    op.create_table(
        "index_log",
        sa.Column(
            "collection_id",
            sa.String(64),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("revision", sa.BigInteger(), primary_key=True),
        sa.Column("face_id", FaceId, primary_key=True),
        sa.Column("op", sa.String(1), nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", sa.String(256), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("scopes", JSONType, nullable=False),
        sa.Column("collections", JSONType, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
        sa.Column("last_used_at", TS, nullable=True),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column(
            "collection_id",
            sa.String(64),
            sa.ForeignKey("collections.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_jobs_collection", "jobs", ["collection_id"])


def downgrade() -> None:
    for table in ("jobs", "api_keys", "index_log", "embeddings", "faces", "identities", "collections"):
        op.drop_table(table)

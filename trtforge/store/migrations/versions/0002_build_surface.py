"""timing caches: one history per (flavor, TensorRT version, GPU, compute capability)

Revision ID: 0002_build_surface
Revises: 0001_initial
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_build_surface"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "timing_caches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("flavor", sa.String(length=32), nullable=False),
        sa.Column("trt_version", sa.String(length=32), nullable=False),
        sa.Column("gpu_name", sa.String(length=128), nullable=False),
        sa.Column("compute_capability", sa.String(length=16), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("parent_id", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("artifact_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["blob_sha256"], ["blobs.sha256"], name=op.f("fk_timing_caches_blob_sha256_blobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timing_caches")),
        sa.UniqueConstraint("cache_key", "generation", name="uq_timing_caches_key_generation"),
    )
    with op.batch_alter_table("timing_caches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_timing_caches_cache_key"), ["cache_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("timing_caches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_timing_caches_cache_key"))
    op.drop_table("timing_caches")

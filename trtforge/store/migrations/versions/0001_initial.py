"""initial schema

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_blobs")),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("build_key", sa.String(length=64), nullable=False),
        sa.Column("recipe_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("flavor", sa.String(length=32), nullable=False),
        sa.Column("trt_version", sa.String(length=32), nullable=False),
        sa.Column("gpu_name", sa.String(length=128), nullable=True),
        sa.Column("compute_capabilities", sa.JSON(), nullable=False),
        sa.Column("plan_sha256", sa.String(length=64), nullable=False),
        sa.Column("plan_size", sa.BigInteger(), nullable=False),
        sa.Column("io_tensors", sa.JSON(), nullable=False),
        sa.Column("profiles", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("recipe_path", sa.Text(), nullable=True),
        sa.Column("build_seconds", sa.Float(), nullable=False),
        sa.Column("build_log", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["plan_sha256"], ["blobs.sha256"], name=op.f("fk_artifacts_plan_sha256_blobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
    )
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_artifacts_build_key"), ["build_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_artifacts_model_sha256"), ["model_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_artifacts_name"), ["name"], unique=False)
        batch_op.create_index("ix_artifacts_name_flavor_version", ["name", "flavor", "trt_version"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_index("ix_artifacts_name_flavor_version")
        batch_op.drop_index(batch_op.f("ix_artifacts_name"))
        batch_op.drop_index(batch_op.f("ix_artifacts_model_sha256"))
        batch_op.drop_index(batch_op.f("ix_artifacts_build_key"))

    op.drop_table("artifacts")
    op.drop_table("blobs")

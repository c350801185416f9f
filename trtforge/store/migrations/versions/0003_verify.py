"""verifications and stored reference outputs

Revision ID: 0003_verify
Revises: 0002_build_surface
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_verify"
down_revision = "0002_build_surface"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verifications",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("artifact_id", sa.String(length=32), nullable=False),
        sa.Column("gpu_name", sa.String(length=128), nullable=False),
        sa.Column("compute_capability", sa.String(length=16), nullable=True),
        sa.Column("runtime_flavor", sa.String(length=32), nullable=False),
        sa.Column("runtime_version", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("perf", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"], name=op.f("fk_verifications_artifact_id_artifacts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
    )
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_verifications_artifact_id"), ["artifact_id"], unique=False)
        batch_op.create_index(
            "ix_verifications_artifact_gpu_runtime", ["artifact_id", "gpu_name", "runtime_version"], unique=False
        )
    op.create_table(
        "reference_outputs",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("model_sha256", sa.String(length=64), nullable=False),
        sa.Column("blob_sha256", sa.String(length=64), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["blob_sha256"], ["blobs.sha256"], name=op.f("fk_reference_outputs_blob_sha256_blobs")),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_reference_outputs")),
    )
    with op.batch_alter_table("reference_outputs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reference_outputs_model_sha256"), ["model_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reference_outputs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reference_outputs_model_sha256"))
    op.drop_table("reference_outputs")
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_index("ix_verifications_artifact_gpu_runtime")
        batch_op.drop_index(batch_op.f("ix_verifications_artifact_id"))
    op.drop_table("verifications")

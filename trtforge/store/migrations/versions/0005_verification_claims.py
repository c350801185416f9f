"""verifications: who vouches for each result (run here, imported signed, or only claimed)

Revision ID: 0005_verification_claims
Revises: 0004_integrity_pins
Create Date: 2026-11-30

Rows that exist before this revision were written by ``trtforge verify`` or by an import that
trusted every bundle; they become ``local``, as they were counted before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_verification_claims"
down_revision = "0004_integrity_pins"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trust", sa.String(length=16), server_default="local", nullable=False))
        batch_op.add_column(sa.Column("signer", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("signer")
        batch_op.drop_column("trust")

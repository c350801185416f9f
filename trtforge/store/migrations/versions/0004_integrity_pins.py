"""integrity apart from verification; pins

Before this revision `fsck --repair` wrote "corrupt" into artifacts.status, and any later
verification overwrote it. Integrity now has its own column; rows marked corrupt keep that mark
there, and their status becomes what their newest verification said (or "unverified").

Revision ID: 0004_integrity_pins
Revises: 0003_verify
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_integrity_pins"
down_revision = "0003_verify"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "artifacts", sa.Column("integrity", sa.String(length=16), nullable=False, server_default=sa.text("'ok'"))
    )
    op.add_column("artifacts", sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE artifacts SET integrity = 'corrupt' WHERE status = 'corrupt'")
    op.execute(
        "UPDATE artifacts SET status = COALESCE(("
        "SELECT v.status FROM verifications v WHERE v.artifact_id = artifacts.id "
        "ORDER BY v.created_at DESC, v.id LIMIT 1), 'unverified') "
        "WHERE status = 'corrupt'"
    )


def downgrade() -> None:
    op.execute("UPDATE artifacts SET status = 'corrupt' WHERE integrity = 'corrupt'")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_column("pinned_at")
        batch_op.drop_column("integrity")

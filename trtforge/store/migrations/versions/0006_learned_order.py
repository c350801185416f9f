"""artifacts and verifications: when this store learned of them (learned_at), and how (learned_via)

Revision ID: 0006_learned_order
Revises: 0005_verification_claims
Create Date: 2026-12-03

"Newest" used to mean the largest ``created_at``, which an imported bundle states as it likes
(2099 beat every local build). From this revision the order is ``learned_at``, this store's own
clock when the row was inserted. Rows that exist before it keep their order: they are numbered
by ``created_at`` (what the order was) and stamped that far apart, ending at the migration's
clock; the next row inserted is learned after all of them. Rows imported earlier cannot be told
apart from local ones and count as ``local``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import op

revision = "0006_learned_order"
down_revision = "0005_verification_claims"
branch_labels = None
depends_on = None


def _stamp_in_created_order(table: str) -> None:
    """learned_at = now - (rows after it) microseconds, counting rows in (created_at, id) order."""
    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.text(f"SELECT id FROM {table} ORDER BY created_at, id"))]  # noqa: S608 - a constant table name
    now = datetime.now(timezone.utc)
    stamp = sa.text(f"UPDATE {table} SET learned_at = :at WHERE id = :id").bindparams(  # noqa: S608 - idem
        sa.bindparam("at", type_=sa.DateTime(timezone=True))
    )
    for position, row_id in enumerate(ids):
        conn.execute(stamp, {"at": now - timedelta(microseconds=len(ids) - position), "id": row_id})


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy: verifications' foreign key pins the artifacts table on SQLite).
    # The column stays nullable in the schema; the catalog stamps every row it inserts.
    op.add_column("artifacts", sa.Column("learned_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "artifacts", sa.Column("learned_via", sa.String(length=16), server_default=sa.text("'local'"), nullable=False)
    )
    op.add_column("verifications", sa.Column("learned_at", sa.DateTime(timezone=True), nullable=True))
    for table in ("artifacts", "verifications"):
        _stamp_in_created_order(table)
        op.create_index(op.f(f"ix_{table}_learned_at"), table, ["learned_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_verifications_learned_at"), table_name="verifications")
    op.drop_index(op.f("ix_artifacts_learned_at"), table_name="artifacts")
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("learned_at")
    with op.batch_alter_table("artifacts", schema=None) as batch_op:
        batch_op.drop_column("learned_via")
        batch_op.drop_column("learned_at")

"""Payment database, revision 1: payments (one per order), cancelled orders, outbox, inbox."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters_postgres.migrations.common import (
    create_outbox_and_inbox,
    drop_outbox_and_inbox,
    status_check,
)

revision = "payment_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("order_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("amount", sa.Numeric(20, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        status_check("status", ("SUCCEEDED", "FAILED", "REFUNDED")),
    )
    op.create_table(
        "cancelled_orders",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column(
            "cancelled_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    create_outbox_and_inbox()


def downgrade() -> None:
    drop_outbox_and_inbox()
    op.drop_table("cancelled_orders")
    op.drop_table("payments")

"""Notification database, revision 1: notifications (one per order), outbox, inbox."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters_postgres.migrations.common import (
    create_outbox_and_inbox,
    drop_outbox_and_inbox,
    status_check,
)

revision = "notification_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("order_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        status_check("type", ("ORDER_CONFIRMED", "ORDER_CANCELLED")),
    )
    create_outbox_and_inbox()


def downgrade() -> None:
    drop_outbox_and_inbox()
    op.drop_table("notifications")

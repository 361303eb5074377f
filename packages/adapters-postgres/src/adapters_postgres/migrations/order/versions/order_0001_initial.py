"""Order database, revision 1: orders, items, status history, idempotency keys, outbox, inbox."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSON

from adapters_postgres.migrations.common import (
    create_outbox_and_inbox,
    drop_outbox_and_inbox,
    status_check,
)

revision = "order_0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("PENDING", "STOCK_RESERVED", "CONFIRMED", "CANCELLED")


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("customer_id", sa.Uuid, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_amount", sa.Numeric(20, 2), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancellation_reason", sa.Text),
        status_check("status", STATUSES),
    )
    op.create_index(
        "orders_open_deadline_idx",
        "orders",
        ["deadline_at"],
        postgresql_where=sa.text("status IN ('PENDING', 'STOCK_RESERVED')"),
    )
    op.create_table(
        "order_items",
        sa.Column(
            "order_id",
            sa.Uuid,
            sa.ForeignKey("orders.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("product_id", sa.Uuid, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("unit_price", sa.Numeric(20, 2), nullable=False),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    )
    op.create_table(
        "order_status_history",
        sa.Column(
            "order_id",
            sa.Uuid,
            sa.ForeignKey("orders.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("idempotency_keys_expires_at_idx", "idempotency_keys", ["expires_at"])
    create_outbox_and_inbox()


def downgrade() -> None:
    drop_outbox_and_inbox()
    op.drop_table("idempotency_keys")
    op.drop_table("order_status_history")
    op.drop_table("order_items")
    op.drop_table("orders")

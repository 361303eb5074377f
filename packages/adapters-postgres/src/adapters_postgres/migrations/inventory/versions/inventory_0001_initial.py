"""Inventory database, revision 1: products, reservations and their lines, outbox, inbox."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters_postgres.migrations.common import (
    create_outbox_and_inbox,
    drop_outbox_and_inbox,
    status_check,
)

revision = "inventory_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column("reserved", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("sold", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("stock >= 0", name="stock_not_negative"),
        sa.CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        sa.CheckConstraint("sold >= 0", name="sold_not_negative"),
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.Uuid, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        status_check("status", ("RESERVED", "RELEASED", "SOLD")),
    )
    op.create_table(
        "reservation_lines",
        sa.Column(
            "order_id",
            sa.Uuid,
            sa.ForeignKey("reservations.order_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("product_id", sa.Uuid, sa.ForeignKey("products.id"), primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    )
    create_outbox_and_inbox()


def downgrade() -> None:
    drop_outbox_and_inbox()
    op.drop_table("reservation_lines")
    op.drop_table("reservations")
    op.drop_table("products")

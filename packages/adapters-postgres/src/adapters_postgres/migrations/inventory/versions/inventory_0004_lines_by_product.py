"""Inventory database, revision 4: ``reservation_lines.product_id`` indexed, the other side
of its foreign key: deleting or re-keying a product (the runbook's catalogue load removes
the demo products) scanned every line of every reservation."""

from __future__ import annotations

from adapters_postgres.migrations.common import create_index_concurrently, drop_index_concurrently

revision = "inventory_0004"
down_revision = "inventory_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently(
        "reservation_lines_product_id_idx", "reservation_lines", ["product_id"]
    )


def downgrade() -> None:
    drop_index_concurrently("reservation_lines_product_id_idx", "reservation_lines")

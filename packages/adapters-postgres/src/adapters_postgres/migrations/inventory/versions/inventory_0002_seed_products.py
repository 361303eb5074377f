"""Inventory database, revision 2: the five seeded products (core_saga.inventory.SEED_PRODUCTS)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from core_saga.inventory import SEED_PRODUCTS

revision = "inventory_0002"
down_revision = "inventory_0001"
branch_labels = None
depends_on = None

_products = sa.table(
    "products",
    sa.column("id", sa.Uuid),
    sa.column("name", sa.Text),
    sa.column("stock", sa.Integer),
    sa.column("reserved", sa.Integer),
    sa.column("sold", sa.Integer),
)


def upgrade() -> None:
    rows = [
        {"id": p.id, "name": p.name, "stock": p.stock, "reserved": 0, "sold": 0}
        for p in SEED_PRODUCTS
    ]
    op.bulk_insert(_products, rows)


def downgrade() -> None:
    """Remove the seeds no reservation refers to (revision 1's downgrade drops the rest)."""
    ids = ", ".join(f"'{p.id}'" for p in SEED_PRODUCTS)
    op.execute(
        f"DELETE FROM products WHERE id IN ({ids}) AND NOT EXISTS "
        "(SELECT 1 FROM reservation_lines l WHERE l.product_id = products.id)"
    )

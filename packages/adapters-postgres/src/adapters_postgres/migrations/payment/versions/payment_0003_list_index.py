"""Payment database, revision 3: ``payments`` indexed by ``(created_at, id)``, so that
listing the newest page (``GET /api/payments`` without ``orderId``)
reads one page, not the whole table."""

from __future__ import annotations

from alembic import op

revision = "payment_0003"
down_revision = "payment_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("payments_created_at_idx", "payments", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("payments_created_at_idx", table_name="payments")

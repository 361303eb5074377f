"""Payment database, revision 3: ``payments`` indexed by ``(created_at, id)``, so that
listing the newest page (``GET /api/payments`` without ``orderId``)
reads one page, not the whole table."""

from __future__ import annotations

from adapters_postgres.migrations.common import create_index_concurrently, drop_index_concurrently

revision = "payment_0003"
down_revision = "payment_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently("payments_created_at_idx", "payments", ["created_at", "id"])


def downgrade() -> None:
    drop_index_concurrently("payments_created_at_idx", "payments")

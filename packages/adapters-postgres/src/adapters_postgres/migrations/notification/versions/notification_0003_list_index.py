"""Notification database, revision 3: ``notifications`` indexed by ``(created_at, id)``, so that
listing the newest page (``GET /api/notifications`` without ``orderId``)
reads one page, not the whole table."""

from __future__ import annotations

from adapters_postgres.migrations.common import create_index_concurrently, drop_index_concurrently

revision = "notification_0003"
down_revision = "notification_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_index_concurrently("notifications_created_at_idx", "notifications", ["created_at", "id"])


def downgrade() -> None:
    drop_index_concurrently("notifications_created_at_idx", "notifications")

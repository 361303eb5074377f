"""Notification database, revision 4: the churning tables vacuumed after 1 % of changes."""

from __future__ import annotations

from adapters_postgres.migrations.common import reset_churn_vacuum, tune_churn_vacuum

revision = "notification_0004"
down_revision = "notification_0003"
branch_labels = None
depends_on = None
TABLES = ("processed_events", "outbox")


def upgrade() -> None:
    tune_churn_vacuum(*TABLES)


def downgrade() -> None:
    reset_churn_vacuum(*TABLES)

"""Order database, revision 3: the churning tables vacuumed after 1 % of changes."""

from __future__ import annotations

from adapters_postgres.migrations.common import reset_churn_vacuum, tune_churn_vacuum

revision = "order_0003"
down_revision = "order_0002"
branch_labels = None
depends_on = None
TABLES = ("processed_events", "outbox", "idempotency_keys")


def upgrade() -> None:
    tune_churn_vacuum(*TABLES)


def downgrade() -> None:
    reset_churn_vacuum(*TABLES)

"""Inventory database, revision 3: the inbox indexed by ``processed_at``, for its purge."""

from __future__ import annotations

from adapters_postgres.migrations.common import drop_inbox_age_index, index_inbox_by_age

revision = "inventory_0003"
down_revision = "inventory_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    index_inbox_by_age()


def downgrade() -> None:
    drop_inbox_age_index()

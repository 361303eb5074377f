"""Payment database, revision 2: the inbox indexed by ``processed_at``, for its purge."""

from __future__ import annotations

from adapters_postgres.migrations.common import drop_inbox_age_index, index_inbox_by_age

revision = "payment_0002"
down_revision = "payment_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    index_inbox_by_age()


def downgrade() -> None:
    drop_inbox_age_index()

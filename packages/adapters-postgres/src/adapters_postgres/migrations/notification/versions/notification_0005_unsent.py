"""Notification database, revision 5: notifications are sent after their commit, and again
until one is recorded as sent.

``notifications_unsent`` holds, for each notification not yet sent, its id and when it was
stored; the notification service deletes the row once the notifier took it, and its sweep
sends again what stays. The notifications stored before this revision count as sent, as do
those an older replica stores during a rolling upgrade: it sends them itself.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from adapters_postgres.migrations.common import reset_churn_vacuum, tune_churn_vacuum

revision = "notification_0005"
down_revision = "notification_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifications_unsent",
        sa.Column("notification_id", sa.Uuid(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "notifications_unsent_created_at_idx",
        "notifications_unsent",
        ["created_at", "notification_id"],
    )
    tune_churn_vacuum("notifications_unsent")


def downgrade() -> None:
    """Fails, changing nothing, while a notification is still unsent: the older release
    would never send it."""
    # Locked first: a replica of this release inserting between the count and the drop
    # would lose its notification with the table.
    op.execute("LOCK TABLE notifications_unsent IN ACCESS EXCLUSIVE MODE")
    unsent = op.get_bind().execute(sa.text("SELECT count(*) FROM notifications_unsent"))
    count = unsent.scalar_one()
    if count:
        raise RuntimeError(
            f"{count} notifications are not sent yet: let the notification service send "
            "them (or delete their rows from notifications_unsent) before downgrading"
        )
    reset_churn_vacuum("notifications_unsent")
    op.drop_table("notifications_unsent")

"""Migration steps shared by every service database: the outbox and the inbox tables."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB


def create_outbox_and_inbox() -> None:
    """Revision 1 of every service database: ``outbox`` and ``processed_events``."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column(
            "headers",
            JSONB,
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "outbox_unpublished_idx", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_index(
        "outbox_published_at_idx",
        "outbox",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )


def drop_outbox_and_inbox() -> None:
    op.drop_table("processed_events")
    op.drop_table("outbox")


def index_inbox_by_age() -> None:
    """Revision 2 of every service database (3 of the inventory's): ``processed_at``
    indexed, so the purge reads the oldest inbox rows a batch at a time.

    A plain ``CREATE INDEX`` in the migration's transaction, as the other indexes: inserts
    into the inbox (consumers) wait while it builds; a migration cannot build it
    ``CONCURRENTLY``, which refuses to run in a transaction.
    """
    op.create_index("processed_events_processed_at_idx", "processed_events", ["processed_at"])


def drop_inbox_age_index() -> None:
    op.drop_index("processed_events_processed_at_idx", table_name="processed_events")


def status_check(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    """``column IN (values)``: a text column instead of an enum type, cheap to extend."""
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")

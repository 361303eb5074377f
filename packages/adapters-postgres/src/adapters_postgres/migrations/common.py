"""Migration steps shared by every service database: the outbox and the inbox tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
    indexed, so the purge reads the oldest inbox rows a batch at a time. Built concurrently:
    the inbox of a running service holds a week of event ids and takes an insert per event.
    """
    create_index_concurrently(
        "processed_events_processed_at_idx", "processed_events", ["processed_at"]
    )


def drop_inbox_age_index() -> None:
    drop_index_concurrently("processed_events_processed_at_idx", "processed_events")


def create_index_concurrently(
    name: str, table: str, columns: list[str], where: str | None = None
) -> None:
    """An index on a table that already has rows and writers: ``CREATE INDEX CONCURRENTLY``
    holds SHARE UPDATE EXCLUSIVE, where a plain build's SHARE lock queues every INSERT behind
    the whole build. It cannot run in a transaction, hence ``autocommit_block`` (``migrate``
    runs one transaction per revision, so only the revisions before this one are committed).

    Re-runnable: a build that failed midway leaves an INVALID index under ``name``, dropped
    first; a valid one (built by a run that died before stamping the revision) is kept.
    ``where`` makes it a partial index.
    """
    with _concurrently():
        if _is_invalid(name):
            op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        op.create_index(
            name,
            table,
            columns,
            postgresql_concurrently=True,
            postgresql_where=None if where is None else sa.text(where),
            if_not_exists=True,
        )


def drop_index_concurrently(name: str, table: str) -> None:
    """``DROP INDEX CONCURRENTLY``: a plain drop's ACCESS EXCLUSIVE lock would queue every
    reader and writer of ``table`` behind the queries in flight. Also drops an INVALID one."""
    with _concurrently():
        op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)


@contextmanager
def _concurrently() -> Iterator[None]:
    """Outside the revision's transaction, and without ``migrate``'s ``lock_timeout``: a
    concurrent build or drop waits for the transactions in flight, but blocks none of them,
    so it may wait as long as they take (a timeout would only leave an INVALID index)."""
    bind = op.get_bind()
    with op.get_context().autocommit_block():
        previous = bind.scalar(sa.text("SELECT current_setting('lock_timeout')"))
        bind.execute(sa.text("SET lock_timeout = 0"))
        try:
            yield
        finally:
            bind.execute(sa.text("SELECT set_config('lock_timeout', :v, false)"), {"v": previous})


def _is_invalid(index: str) -> bool:
    """An index of that name exists but is INVALID: left over by a failed concurrent build."""
    query = sa.text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")
    return bool(op.get_bind().scalar(query, {"name": index}))


CHURN_VACUUM = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_insert_scale_factor": "0.01",
    "autovacuum_analyze_scale_factor": "0.02",
}
"""Vacuum and analyse after 1 % of a table changed instead of PostgreSQL's 20 %: a week of
inbox ids (hundreds of millions of rows) would otherwise collect tens of millions of purged
rows before a vacuum, and the outbox's claim plan depends on fresh statistics."""


def tune_churn_vacuum(*tables: str) -> None:
    """Tables whose rows are all deleted again (inbox, outbox, idempotency keys). A storage
    parameter change takes SHARE UPDATE EXCLUSIVE: writers go on."""
    settings = ", ".join(f"{name} = {value}" for name, value in CHURN_VACUUM.items())
    for table in tables:
        op.execute(f"ALTER TABLE {table} SET ({settings})")


def reset_churn_vacuum(*tables: str) -> None:
    for table in tables:
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(CHURN_VACUUM)})")


def replace_status_check(table: str, values: tuple[str, ...], *, widening: bool = True) -> None:
    """``status_check("status", values)`` in place of ``table``'s.

    Widening (every row already passes): added NOT VALID in the revision's transaction
    (ACCESS EXCLUSIVE for a moment, new rows checked from then on), then validated outside
    it, where the scan of every row holds SHARE UPDATE EXCLUSIVE and blocks no writer.
    Narrowing: checked at once, in the revision's transaction, so a row it refuses fails
    the revision, changing nothing (NOT VALID, it would stay in place, refusing writes).
    """
    check = status_check("status", values)
    op.execute(
        f"ALTER TABLE {table} DROP CONSTRAINT {check.name}, "
        f"ADD CONSTRAINT {check.name} CHECK ({check.sqltext}){' NOT VALID' if widening else ''}"
    )
    if widening:
        with _concurrently():
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {check.name}")


def status_check(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    """``column IN (values)``: a text column instead of an enum type, cheap to extend."""
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=f"{column}_valid")

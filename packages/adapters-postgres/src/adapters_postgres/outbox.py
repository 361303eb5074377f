"""The transactional outbox: rows written with the business change, and the relay's store."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from core_saga.messages import Envelope
from core_saga.ports import OutboundMessage, PendingMessage
from sqlalchemy import (
    ColumnElement,
    Insert,
    bindparam,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from adapters_postgres import raw
from adapters_postgres.engine import create_engine, transaction
from adapters_postgres.housekeeping import PURGE_BATCH, delete_in_batches, delete_oldest
from adapters_postgres.sql import unnest_params, unnest_rows, where_given
from adapters_postgres.tables import outbox


def outbox_channel(service: str) -> str:
    """The LISTEN/NOTIFY channel the relay of ``service`` is woken on (``adapters_postgres
    .wakeup`` sends it after a commit, never inside the business transaction)."""
    return f"outbox_{service}"


HeaderSource = Callable[[], Mapping[str, str]]
"""Headers every outbox row gets when written, e.g. the current trace context."""

_COLUMNS = (
    outbox.c.event_id,
    outbox.c.topic,
    outbox.c.key,
    outbox.c.event_type,
    outbox.c.payload,
    outbox.c.headers,
    outbox.c.created_at,
)


def insert_rows(where: ColumnElement[bool] | None = None) -> Insert:
    """The rows of ``PostgresOutbox.params`` (each only ``where`` holds, if given); an event
    id already there is skipped."""
    rows = where_given(select(*unnest_params("rows", *_COLUMNS).c), where)
    return (
        insert(outbox)
        .from_select([each.key for each in _COLUMNS], rows)
        .on_conflict_do_nothing(index_elements=[outbox.c.event_id])
    )


_ADD_ALL = raw.Compiled(insert_rows())
"""A transaction's rows in one statement; on the driver (``adapters_postgres.raw``), as
every transaction that emits runs it. No ``pg_notify`` here: a notifying commit takes the
server's one notification-queue lock through its WAL flush, so all of them serialise
(``adapters_postgres.wakeup`` wakes the relay after the commit instead)."""


class PostgresOutbox:
    """``Outbox`` on the unit of work's connection: the rows commit or vanish with it.

    ``add`` keeps the row; ``flush`` (the unit of work's commit) writes them all in one
    statement. The unit of work wakes the relay once the transaction committed
    (``adapters_postgres.wakeup``), so a relay wakes only when there is something to read.
    """

    def __init__(self, conn: AsyncConnection, context: HeaderSource | None = None) -> None:
        self._conn = conn
        self._context = context
        self._rows: list[tuple[object, ...]] = []
        self._added: list[Envelope] = []

    @property
    def added(self) -> tuple[Envelope, ...]:
        """What this transaction emitted so far, flushed or not."""
        return tuple(self._added)

    async def add(self, envelope: Envelope, headers: Mapping[str, str] | None = None) -> None:
        self._rows.append(self._row(envelope, headers))
        self._added.append(envelope)

    def context(self) -> Mapping[str, str]:
        return dict(self._context()) if self._context else {}

    def params(self, envelopes: Sequence[Envelope]) -> dict[str, Any]:
        """The parameters of ``insert_rows`` for ``envelopes``, not kept."""
        rows = [self._row(envelope, None) for envelope in envelopes]
        return self._params(rows)

    def _row(self, envelope: Envelope, headers: Mapping[str, str] | None) -> tuple[object, ...]:
        return (
            envelope.event_id,
            envelope.topic,
            envelope.key,
            envelope.event_type,
            envelope.to_dict(),
            {**(self._context() if self._context else {}), **(headers or {})},
            envelope.occurred_at,  # the event's own time: the app's clock, not the database's
        )

    def _params(self, rows: Sequence[tuple[object, ...]]) -> dict[str, Any]:
        return unnest_rows("rows", rows, *_COLUMNS)

    async def flush(self) -> None:
        """Write the rows added since the last flush, in the order they were added."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        await raw.fetch_compiled(self._conn, _ADD_ALL, self._params(rows))

    def transaction_ended(self) -> None:
        """Rows not flushed left with their transaction."""
        self._rows.clear()
        self._added.clear()


# The relay's two statements run on the driver (``raw``), as plain SQL: SQLAlchemy's per-row result
# processing was half the relay's CPU (py-spy, 20,000 events), and these rows go straight
# out as bytes. The claim walks the ``published_at IS NULL`` partial index in id order; the
# batch in flight is a hashed ``NOT IN`` (``<> ALL`` compared each row with every id).
_CLAIM_BATCH = """
SELECT id, event_id, topic, key, event_type, payload::text AS value, headers::text AS headers,
       created_at
FROM outbox WHERE published_at IS NULL AND id NOT IN (SELECT unnest($2::bigint[]))
ORDER BY id LIMIT $1
"""

_MARK_PUBLISHED = (
    "UPDATE outbox SET published_at = $2 WHERE id = ANY($1::bigint[]) AND published_at IS NULL"
)

_DELETE_PUBLISHED = delete_oldest(outbox.c.published_at)  # the published_at partial index

_REQUEUE_PUBLISHED = (
    update(outbox)
    .where(outbox.c.published_at >= bindparam("since", type_=outbox.c.published_at.type))
    .values(published_at=None)
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # "since" when none is given: every published row

_OLDEST_UNPUBLISHED = (
    select(outbox.c.created_at)
    .where(outbox.c.published_at.is_(None))
    .order_by(outbox.c.id)
    .limit(1)
)


class PostgresOutboxStore:
    """``OutboxStore`` for the relay; each call is its own short transaction.

    Bound to an engine (any pooled connection) or to one connection in autocommit mode: the
    relay binds it to the connection that holds its leadership lock, so a relay whose
    connection died cannot mark anything as published after a standby took over.
    """

    def __init__(
        self, bind: AsyncEngine | AsyncConnection, *, purge_batch: int = PURGE_BATCH
    ) -> None:
        self._bind = bind
        self._purge_batch = purge_batch

    async def claim_batch(self, limit: int, skip: Sequence[int] = ()) -> Sequence[PendingMessage]:
        async with transaction(self._bind) as conn:
            rows = await raw.fetch(conn, _CLAIM_BATCH, limit, list(skip))
        return [
            PendingMessage(
                position=position,
                message=OutboundMessage(
                    event_id=event_id,
                    topic=topic,
                    key=key,
                    event_type=event_type,
                    value=value.encode(),
                    headers=json.loads(headers) if headers and headers != "{}" else {},
                ),
                created_at=created_at,
            )
            for position, event_id, topic, key, event_type, value, headers, created_at in rows
        ]

    async def mark_published(self, positions: Sequence[int], at: datetime) -> None:
        if not positions:
            return
        async with transaction(self._bind) as conn:  # one array parameter, however large the batch
            await raw.fetch(conn, _MARK_PUBLISHED, list(positions), at)

    async def delete_published_before(self, cutoff: datetime) -> int:
        """Rows published before ``cutoff``, ``purge_batch`` per statement (and transaction)."""
        return await delete_in_batches(self._bind, _DELETE_PUBLISHED, cutoff, self._purge_batch)

    async def requeue_published(self, since: datetime | None = None) -> int:
        """See ``OutboxStore.requeue_published``: one UPDATE (the inbox outlives the rows)."""
        async with transaction(self._bind) as conn:
            result = await conn.execute(_REQUEUE_PUBLISHED, {"since": since or _EPOCH})
        return int(result.rowcount)

    async def oldest_unpublished_age(self, now: datetime) -> float:
        """The ``created_at`` of the first unpublished row in id order: one entry of the
        ``published_at IS NULL`` partial index, however long the backlog (``min(created_at)``
        read all of it, every 5 s on every replica, while the broker was down).

        Not strictly the oldest ``created_at``: an id is drawn from the sequence when the
        committing transaction writes its rows, ``created_at`` is the event's ``occurredAt``
        from the application's clock, so a transaction that made its event first and
        committed second holds the later id. The two orders differ only among transactions
        that overlapped (milliseconds, plus the clock difference between replicas), far
        below what this gauge is for: the relay sends in id order, so this row is the one
        everything waits behind, and its age is how late the backlog is. The in-memory store
        measures the same way.
        """
        async with transaction(self._bind) as conn:
            oldest: datetime | None = await conn.scalar(_OLDEST_UNPUBLISHED)
        if oldest is None:
            return 0.0
        return max(0.0, float((now - oldest).total_seconds()))


async def requeue_published(url: str, since: datetime | None = None) -> int:
    """``PostgresOutboxStore.requeue_published`` on the database at ``url``, on a connection
    of its own (for a command or a start-up step, not a service's pool)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        return await PostgresOutboxStore(engine).requeue_published(since)
    finally:
        await engine.dispose()

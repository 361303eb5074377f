"""The transactional outbox: rows written with the business change, and the relay's store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from core_saga.messages import Envelope
from core_saga.ports import OutboundMessage, PendingMessage
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Text,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters_postgres.tables import outbox


def outbox_channel(service: str) -> str:
    """The LISTEN/NOTIFY channel a committed outbox row wakes the relay on."""
    return f"outbox_{service}"


HeaderSource = Callable[[], Mapping[str, str]]
"""Headers every outbox row gets when written, e.g. the current trace context."""

_ADD = (
    insert(outbox)
    .values(
        event_id=bindparam("event_id", type_=outbox.c.event_id.type),
        topic=bindparam("topic", type_=outbox.c.topic.type),
        key=bindparam("key", type_=outbox.c.key.type),
        event_type=bindparam("event_type", type_=outbox.c.event_type.type),
        payload=bindparam("payload", type_=outbox.c.payload.type),
        headers=bindparam("headers", type_=outbox.c.headers.type),
        created_at=bindparam("created_at", type_=outbox.c.created_at.type),
    )
    .on_conflict_do_nothing(index_elements=[outbox.c.event_id])
)
"""Built once, like the inbox's statement: every event written runs it."""

_ADD_AND_NOTIFY = select(
    func.pg_notify(bindparam("channel", type_=Text), literal_column("''"))
).add_cte(_ADD.cte("added"))
"""A transaction's first row and its ``NOTIFY`` in one round trip (an insert in ``WITH``
runs whether or not the query reads it)."""


class PostgresOutbox:
    """``Outbox`` on the unit of work's connection: the row commits or vanishes with it.

    The first ``add`` also queues ``NOTIFY outbox_<service>``; PostgreSQL delivers it only
    when the transaction commits, so a relay wakes exactly when there is something to read.
    """

    def __init__(
        self, conn: AsyncConnection, channel: str, context: HeaderSource | None = None
    ) -> None:
        self._conn = conn
        self._channel = channel
        self._context = context
        self._notified = False  # one NOTIFY per transaction is enough

    async def add(self, envelope: Envelope, headers: Mapping[str, str] | None = None) -> None:
        row = {
            "event_id": envelope.event_id,
            "topic": envelope.topic,
            "key": envelope.key,
            "event_type": envelope.event_type,
            "payload": envelope.to_dict(),
            "headers": {**(self._context() if self._context else {}), **(headers or {})},
            # the event's own time: the app's clock, not the database's
            "created_at": envelope.occurred_at,
        }
        if self._notified:
            await self._conn.execute(_ADD, row)
        else:
            await self._conn.execute(_ADD_AND_NOTIFY, {**row, "channel": self._channel})
            self._notified = True


_CLAIM_BATCH = (
    select(
        outbox.c.id,
        outbox.c.event_id,
        outbox.c.topic,
        outbox.c.key,
        outbox.c.event_type,
        cast(outbox.c.payload, Text).label("value"),
        outbox.c.headers,
        outbox.c.created_at,
    )
    .where(outbox.c.published_at.is_(None))
    .order_by(outbox.c.id)
    .limit(bindparam("limit", type_=Integer))
)

_MARK_PUBLISHED = text(
    "UPDATE outbox SET published_at = :at WHERE id = ANY(:ids) AND published_at IS NULL"
).bindparams(bindparam("ids", type_=ARRAY(BigInteger)), bindparam("at", type_=DateTime(True)))

_DELETE_PUBLISHED = delete(outbox).where(
    outbox.c.published_at < bindparam("cutoff", type_=outbox.c.published_at.type)
)

_OLDEST_UNPUBLISHED = select(func.min(outbox.c.created_at)).where(outbox.c.published_at.is_(None))


class PostgresOutboxStore:
    """``OutboxStore`` for the relay; each call is its own short transaction.

    Bound to an engine (any pooled connection) or to one connection in autocommit mode: the
    relay binds it to the connection that holds its leadership lock, so a relay whose
    connection died cannot mark anything as published after a standby took over.
    """

    def __init__(self, bind: AsyncEngine | AsyncConnection) -> None:
        self._bind = bind

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        if isinstance(self._bind, AsyncConnection):
            yield self._bind
        else:
            async with self._bind.begin() as conn:
                yield conn

    async def claim_batch(self, limit: int) -> Sequence[PendingMessage]:
        async with self._connection() as conn:
            rows = (await conn.execute(_CLAIM_BATCH, {"limit": limit})).all()
        return [
            PendingMessage(
                position=row.id,
                message=OutboundMessage(
                    event_id=row.event_id,
                    topic=row.topic,
                    key=row.key,
                    event_type=row.event_type,
                    value=row.value.encode(),
                    headers=dict(row.headers or {}),
                ),
                created_at=row.created_at,
            )
            for row in rows
        ]

    async def mark_published(self, positions: Sequence[int], at: datetime) -> None:
        if not positions:
            return
        async with self._connection() as conn:  # one array parameter, however large the batch
            await conn.execute(_MARK_PUBLISHED, {"ids": list(positions), "at": at})

    async def delete_published_before(self, cutoff: datetime) -> int:
        async with self._connection() as conn:
            result = await conn.execute(_DELETE_PUBLISHED, {"cutoff": cutoff})
        return int(result.rowcount)

    async def oldest_unpublished_age(self, now: datetime) -> float:
        async with self._connection() as conn:
            oldest: datetime | None = await conn.scalar(_OLDEST_UNPUBLISHED)
        if oldest is None:
            return 0.0
        return max(0.0, float((now - oldest).total_seconds()))

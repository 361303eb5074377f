"""The inbox: processed event ids, inserted first so a duplicate is known before any effect."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres.sql import unnest_params, unnest_rows
from adapters_postgres.tables import processed_events

_MARK_PROCESSED = (
    insert(processed_events)
    .values(
        event_id=bindparam("event_id", type_=processed_events.c.event_id.type),
        event_type=bindparam("event_type", type_=processed_events.c.event_type.type),
    )
    .on_conflict_do_nothing(index_elements=[processed_events.c.event_id])
    .returning(processed_events.c.event_id)
)
"""Built once: every consumed message runs it, so it reuses the statement and its cache key."""

_EVENT_COLUMNS = (processed_events.c.event_id, processed_events.c.event_type)
_MARK_ALL = (
    insert(processed_events)
    .from_select(
        [each.key for each in _EVENT_COLUMNS],
        select(*unnest_params("events", *_EVENT_COLUMNS).c),
    )
    .on_conflict_do_nothing(index_elements=[processed_events.c.event_id])
    .returning(processed_events.c.event_id)
)
"""A batch's marks in one statement; unnest inserts them in array order (sorted ids)."""


class PostgresInbox:
    """``Inbox`` on the unit of work's connection.

    ``INSERT … ON CONFLICT DO NOTHING``: when two transactions carry the same event id, the
    second waits on the first's uncommitted row; if the first commits, the second inserts
    nothing and sees a duplicate; if it rolls back, the second applies the event.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def mark_processed(self, event_id: UUID, event_type: str) -> bool:
        result = await self._conn.execute(
            _MARK_PROCESSED, {"event_id": event_id, "event_type": event_type}
        )
        return result.first() is not None

    async def mark_all(self, events: Sequence[tuple[UUID, str]]) -> set[UUID]:
        rows = unnest_rows("events", sorted(events), *_EVENT_COLUMNS)
        return set((await self._conn.execute(_MARK_ALL, rows)).scalars())

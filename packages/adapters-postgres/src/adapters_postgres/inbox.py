"""The inbox: processed event ids, inserted first so a duplicate is known before any effect."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw
from adapters_postgres.sql import insert_unnested, param, unnest_rows
from adapters_postgres.tables import processed_events

_MARK_PROCESSED = raw.Compiled(
    insert(processed_events)
    .values(
        event_id=param(processed_events.c.event_id),
        event_type=param(processed_events.c.event_type),
    )
    .on_conflict_do_nothing(index_elements=[processed_events.c.event_id])
    .returning(processed_events.c.event_id)
)

_EVENT_COLUMNS = (processed_events.c.event_id, processed_events.c.event_type)
_MARK_ALL = raw.Compiled(
    insert_unnested(
        processed_events, "events", *_EVENT_COLUMNS, unique=processed_events.c.event_id
    ).returning(processed_events.c.event_id)
)
"""A batch's marks in one statement; unnest inserts them in array order (sorted ids).
Both run on the driver (``adapters_postgres.raw``): every consumed batch runs one."""


class PostgresInbox:
    """``Inbox`` on the unit of work's connection.

    ``INSERT … ON CONFLICT DO NOTHING``: when two transactions carry the same event id, the
    second waits on the first's uncommitted row; if the first commits, the second inserts
    nothing and sees a duplicate; if it rolls back, the second applies the event.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def mark_processed(self, event_id: UUID, event_type: str) -> bool:
        params = {"event_id": event_id, "event_type": event_type}
        return bool(await raw.fetch_compiled(self._conn, _MARK_PROCESSED, params))

    async def mark_all(self, events: Sequence[tuple[UUID, str]]) -> set[UUID]:
        params = unnest_rows("events", sorted(events), *_EVENT_COLUMNS)
        return {row[0] for row in await raw.fetch_compiled(self._conn, _MARK_ALL, params)}

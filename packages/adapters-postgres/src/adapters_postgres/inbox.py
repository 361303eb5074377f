"""The inbox: processed event ids, inserted first so a duplicate is known before any effect."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw

_MARK_PROCESSED = """
INSERT INTO processed_events (event_id, event_type) VALUES ($1, $2)
ON CONFLICT (event_id) DO NOTHING RETURNING event_id
"""

_MARK_ALL = """
INSERT INTO processed_events (event_id, event_type)
SELECT * FROM unnest($1::uuid[], $2::text[])
ON CONFLICT (event_id) DO NOTHING RETURNING event_id
"""
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
        return bool(await raw.fetch(self._conn, _MARK_PROCESSED, event_id, event_type))

    async def mark_all(self, events: Sequence[tuple[UUID, str]]) -> set[UUID]:
        ordered = sorted(events)
        ids, types = [e[0] for e in ordered], [e[1] for e in ordered]
        return {row[0] for row in await raw.fetch(self._conn, _MARK_ALL, ids, types)}

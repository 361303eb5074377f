"""In-memory outbox (a database's table and one transaction's writes) and inbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from core_saga.memory.tables import LockScope, Staged
from core_saga.messages import Envelope
from core_saga.ports import Clock, OutboundMessage, PendingMessage


@dataclass
class OutboxRow:
    position: int
    message: OutboundMessage
    created_at: datetime
    published_at: datetime | None = None


class MemoryOutboxStore:
    """One database's outbox rows, in id order; the relay's ``OutboxStore``."""

    def __init__(self) -> None:
        self.rows: list[OutboxRow] = []
        self._next_position = 1

    def append(self, messages: Sequence[OutboundMessage], at: datetime) -> None:
        """Rows written by a committing transaction; an event id already here is skipped
        (the unique ``event_id`` of the PostgreSQL outbox)."""
        known = {row.message.event_id for row in self.rows}
        for message in messages:
            if message.event_id in known:
                continue
            known.add(message.event_id)
            self.rows.append(OutboxRow(self._next_position, message, at))
            self._next_position += 1

    def unpublished(self) -> list[OutboxRow]:
        return [row for row in self.rows if row.published_at is None]

    async def claim_batch(self, limit: int, skip: Sequence[int] = ()) -> Sequence[PendingMessage]:
        skipped = set(skip)
        rows = [row for row in self.unpublished() if row.position not in skipped]
        return [PendingMessage(row.position, row.message, row.created_at) for row in rows[:limit]]

    async def mark_published(self, positions: Sequence[int], at: datetime) -> None:
        wanted = set(positions)
        for row in self.rows:
            if row.position in wanted and row.published_at is None:
                row.published_at = at

    async def delete_published_before(self, cutoff: datetime) -> int:
        kept = [row for row in self.rows if row.published_at is None or row.published_at >= cutoff]
        deleted = len(self.rows) - len(kept)
        self.rows = kept
        return deleted

    async def requeue_published(self, since: datetime | None = None) -> int:
        again = [
            row
            for row in self.rows
            if row.published_at is not None and (since is None or row.published_at >= since)
        ]
        for row in again:
            row.published_at = None
        return len(again)

    async def oldest_unpublished_age(self, now: datetime) -> float:
        waiting = self.unpublished()
        return (now - waiting[0].created_at).total_seconds() if waiting else 0.0


class MemoryOutbox:
    """One transaction's outbox writes; they reach the store only on commit."""

    def __init__(self, store: MemoryOutboxStore, clock: Clock) -> None:
        self._store, self._clock = store, clock
        self._pending: list[OutboundMessage] = []

    async def add(self, envelope: Envelope, headers: Mapping[str, str] | None = None) -> None:
        self._pending.append(OutboundMessage.from_envelope(envelope, headers))

    def context(self) -> Mapping[str, str]:
        return {}  # no trace context in memory

    def apply(self) -> None:
        self._store.append(self._pending, self._clock.now())
        self._pending = []

    def discard(self) -> None:
        self._pending = []


class MemoryInbox:
    """Processed event ids; a concurrent transaction on the same id waits, like a unique index."""

    def __init__(self, rows: Staged[UUID, str], locks: LockScope) -> None:
        self._rows, self._locks = rows, locks

    async def mark_processed(self, event_id: UUID, event_type: str) -> bool:
        await self._locks.lock(event_id)
        if self._rows.get(event_id) is not None:
            return False
        self._rows.put(event_id, event_type)
        return True

    async def mark_all(self, events: Sequence[tuple[UUID, str]]) -> set[UUID]:
        return {
            event_id
            for event_id, event_type in sorted(events)
            if await self.mark_processed(event_id, event_type)
        }

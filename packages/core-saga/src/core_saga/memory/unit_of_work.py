"""The in-memory database of one service and its unit of work (one transaction)."""

from __future__ import annotations

from collections.abc import Collection, Hashable
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

from core_saga.memory.outbox import MemoryInbox, MemoryOutbox, MemoryOutboxStore
from core_saga.memory.tables import LockScope, RowLocks, Staged, Table
from core_saga.ports import Clock, Inbox, Outbox

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


HELD_ORDERS = "held_orders"  # per-order locks: ``hold`` and the payments' ``lock_order``


class MemoryDatabase:
    """What every service database holds: row locks, the inbox and the outbox."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.locks = RowLocks()
        self.processed_events: Table[UUID, str] = Table(lambda event_type: event_type)
        self.outbox = MemoryOutboxStore()


class MemoryUnitOfWork:
    """A transaction: reads see committed rows and its own writes; commit applies them all.

    Leaving the ``async with`` block without ``commit`` (or by an exception) discards every
    staged write, outbox and inbox included, and releases the transaction's row locks.
    """

    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db
        self._owner = object()
        self._staged: list[Staged[Any, Any] | MemoryOutbox] = []
        self._outbox = MemoryOutbox(db.outbox, db.clock)
        self._staged.append(self._outbox)
        self.outbox: Outbox = self._outbox
        self.inbox: Inbox = MemoryInbox(
            self.stage(db.processed_events), self.lock_scope("processed_events")
        )

    def stage(self, table: Table[K, V]) -> Staged[K, V]:
        staged: Staged[K, V] = Staged(table)
        self._staged.append(staged)
        return staged

    def lock_scope(self, table: str) -> LockScope:
        return LockScope(self._db.locks, self._owner, table)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    async def hold(self, order_ids: Collection[UUID]) -> None:
        held = self.lock_scope(HELD_ORDERS)
        for order_id in sorted(order_ids):
            await held.lock(order_id)

    async def commit(self) -> None:
        for staged in self._staged:  # no await in between: other tasks see all or nothing
            staged.apply()
        self._db.locks.release_all(self._owner)

    async def rollback(self) -> None:
        for staged in self._staged:
            staged.discard()
        self._db.locks.release_all(self._owner)

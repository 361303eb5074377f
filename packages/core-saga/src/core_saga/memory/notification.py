"""The notification service's in-memory database, and a notifier that records what it sent."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from core_saga.memory.tables import LockScope, Staged, Table
from core_saga.memory.unit_of_work import MemoryDatabase, MemoryUnitOfWork
from core_saga.notifications import Notification
from core_saga.ports import LIST_LIMIT, Clock, NotificationRepository, Position


class MemoryNotifications:
    """At most one notification per order (the order id is the key)."""

    def __init__(self, rows: Staged[UUID, Notification], locks: LockScope) -> None:
        self._rows, self._locks = rows, locks

    async def add(self, notification: Notification) -> bool:
        await self._locks.lock(notification.order_id)
        if self._rows.get(notification.order_id) is not None:
            return False
        self._rows.put(notification.order_id, notification)
        return True

    async def list(
        self,
        order_id: UUID | None = None,
        *,
        limit: int = LIST_LIMIT,
        before: Position | None = None,
    ) -> Sequence[Notification]:
        return self._rows.newest(
            lambda n: order_id is None or n.order_id == order_id,
            lambda n: (n.created_at, n.id),
            limit,
            before,
        )


class MemoryNotificationDatabase(MemoryDatabase):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.notifications: Table[UUID, Notification] = Table(lambda frozen: frozen)

    def unit_of_work(self) -> MemoryNotificationUnitOfWork:
        return MemoryNotificationUnitOfWork(self)


class MemoryNotificationUnitOfWork(MemoryUnitOfWork):
    def __init__(self, db: MemoryNotificationDatabase) -> None:
        super().__init__(db)
        self.notifications: NotificationRepository = MemoryNotifications(
            self.stage(db.notifications), self.lock_scope("notifications")
        )


class MemoryNotifier:
    """A ``Notifier`` that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)

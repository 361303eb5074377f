"""The notification service's in-memory database, and a notifier that records what it sent."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from core_saga.memory.tables import LockScope, Staged, Table
from core_saga.memory.unit_of_work import MemoryDatabase, MemoryUnitOfWork
from core_saga.notifications import Notification
from core_saga.ports import (
    LIST_LIMIT,
    Clock,
    InfrastructureError,
    NotificationRepository,
    Position,
)


class MemoryNotifications:
    """At most one notification per order (the order id is the key); ``unsent`` marks, by
    order id, those not yet sent."""

    def __init__(
        self, rows: Staged[UUID, Notification], unsent: Staged[UUID, bool], locks: LockScope
    ) -> None:
        self._rows, self._unsent, self._locks = rows, unsent, locks

    async def add(self, notification: Notification) -> bool:
        await self._locks.lock(notification.order_id)
        if self._rows.get(notification.order_id) is not None:
            return False
        self._rows.put(notification.order_id, notification)
        self._unsent.put(notification.order_id, True)
        return True

    async def unsent(
        self, before: datetime, limit: int, *, after: Position | None = None
    ) -> Sequence[Notification]:
        return self._rows.oldest(
            lambda n: bool(self._unsent.get(n.order_id)) and n.created_at <= before,
            lambda n: (n.created_at, n.id),
            limit,
            after,
        )

    async def mark_sent(self, notifications: Collection[Notification]) -> None:
        for notification in notifications:
            self._unsent.put(notification.order_id, False)

    async def list(
        self,
        order_id: UUID | None = None,
        *,
        limit: int = LIST_LIMIT,
        before: Position | None = None,
    ) -> Sequence[Notification]:
        page = self._rows.newest(
            lambda n: order_id is None or n.order_id == order_id,
            lambda n: (n.created_at, n.id),
            limit,
            before,
        )
        return [replace(n, sent=not self._unsent.get(n.order_id)) for n in page]


class MemoryNotificationDatabase(MemoryDatabase):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.notifications: Table[UUID, Notification] = Table(lambda frozen: frozen)
        self.unsent: Table[UUID, bool] = Table(lambda flag: flag)

    def unit_of_work(self) -> MemoryNotificationUnitOfWork:
        return MemoryNotificationUnitOfWork(self)


class MemoryNotificationUnitOfWork(MemoryUnitOfWork):
    def __init__(self, db: MemoryNotificationDatabase) -> None:
        super().__init__(db)
        self.notifications: NotificationRepository = MemoryNotifications(
            self.stage(db.notifications), self.stage(db.unsent), self.lock_scope("notifications")
        )


class MemoryNotifier:
    """A ``Notifier`` that keeps what it sent, each notification once (deduplicated by id,
    as ``Notifier`` asks of a real one). ``down`` makes every send fail before it acts, as
    an outage does; ``answers_lost`` makes every send act, then time out."""

    def __init__(self) -> None:
        self.sent: list[Notification] = []
        self.down = False
        self.answers_lost = False

    async def send(self, notification: Notification) -> None:
        if self.down:
            raise InfrastructureError("the notifier is down")
        if all(sent.id != notification.id for sent in self.sent):
            self.sent.append(notification)
        if self.answers_lost:
            raise TimeoutError("the notifier's answer was lost")

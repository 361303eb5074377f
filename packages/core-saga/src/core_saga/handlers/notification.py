"""The notification service: one stored notification per terminal order, sent after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from core_saga.handlers.exactly_once import Apply, apply_batch, apply_once
from core_saga.ids import new_id
from core_saga.messages import Envelope, Event, OrderCancelled, OrderConfirmed
from core_saga.notifications import Notification, NotificationType
from core_saga.ports import Around, Clock, DomainError, NotificationUnitOfWork, Notifier

UNKNOWN_RECIPIENT = "unknown"

logger = logging.getLogger(__name__)


class LoggingNotifier:
    """A ``Notifier`` that writes each notification to the log."""

    def __init__(self, log: logging.Logger = logger) -> None:
        self._log = log

    async def send(self, notification: Notification) -> None:
        self._log.info(
            "notification %s to %s: %s",
            notification.type,
            notification.recipient,
            notification.message,
            extra={"order_id": str(notification.order_id)},
        )


def notification_for(event: OrderConfirmed | OrderCancelled, now: datetime) -> Notification:
    """What the customer is told about how the order ended."""
    recipient = UNKNOWN_RECIPIENT if event.customer_id is None else str(event.customer_id)
    if isinstance(event, OrderConfirmed):
        kind, message = NotificationType.ORDER_CONFIRMED, f"Order {event.order_id} is confirmed."
    else:
        kind = NotificationType.ORDER_CANCELLED
        message = f"Order {event.order_id} was cancelled: {event.reason}"
    return Notification(new_id(), event.order_id, kind, recipient, message, now)


@dataclass
class NotificationService:
    """Applies OrderConfirmed and OrderCancelled: store once, then send (DESIGN §3)."""

    uow: Callable[[], NotificationUnitOfWork]
    clock: Clock
    notifier: Notifier
    subscriptions: frozenset[str] = field(
        default=frozenset({"OrderConfirmed", "OrderCancelled"}), init=False
    )

    async def handle(self, envelope: Envelope) -> None:
        if envelope.event_type in self.subscriptions:
            stored: list[Notification] = []
            await apply_once(self.uow, self.clock, envelope, self._storing(stored))
            await self._send(stored)

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        stored: list[Notification] = []
        await apply_batch(self.uow, self.clock, envelopes, self._storing(stored), around=around)
        await self._send(stored)

    def _storing(self, stored: list[Notification]) -> Apply[NotificationUnitOfWork]:
        """Stores an event's notification; collects the new ones in ``stored``."""

        async def store(uow: NotificationUnitOfWork, envelope: Envelope) -> list[Event]:
            event = envelope.payload
            if not isinstance(event, OrderConfirmed | OrderCancelled):
                raise DomainError(f"the notification service does not apply {envelope.event_type}")
            notification = notification_for(event, self.clock.now())
            if await uow.notifications.add(notification):
                stored.append(notification)
            return []

        return store

    async def _send(self, stored: list[Notification]) -> None:
        for notification in stored:  # only after the commit: a rollback sends nothing
            await self.notifier.send(notification)

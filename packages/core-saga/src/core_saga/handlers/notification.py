"""The notification service: one stored notification per terminal order, sent after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from core_saga.handlers.after_commit import (
    QuietAfterCommit,
    RemoteUnavailable,
    Waiting,
    call_each,
)
from core_saga.handlers.exactly_once import Apply, apply_batch, apply_once
from core_saga.ids import new_id
from core_saga.messages import Envelope, Event, OrderCancelled, OrderConfirmed
from core_saga.notifications import Notification, NotificationType
from core_saga.ports import (
    Around,
    Clock,
    DomainError,
    NotificationUnitOfWork,
    Notifier,
    Position,
)

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


RESEND_AFTER = timedelta(seconds=10)
"""How long a stored notification may stay unsent before the sweep sends it again: longer
than a consumer batch's sends usually take."""
NOTIFIER_TIMEOUT = timedelta(seconds=10)
"""The longest a send may take: one that hangs would hold its batch, and its partition."""


class NotifierUnavailable(RemoteUnavailable):
    """A send failed: its notification stays unsent, for a later sweep."""


@dataclass
class NotificationService:
    """Applies OrderConfirmed and OrderCancelled: store once, then send (README: rules).

    The consuming transaction stores each new notification as unsent; after its commit
    each is sent outside any transaction (``after_commit``), and the ones sent are recorded
    as such in one statement. One that fails (an outage, a crash before the record) stays
    unsent, and ``send_unsent`` sends it again: a notifier sees a notification at least
    once, so it must deduplicate by its id (see ``Notifier``). Before, a send that failed
    after the commit lost its notification, and every one after it in the batch: the inbox
    skips the redelivered events.
    """

    uow: Callable[[], NotificationUnitOfWork]
    clock: Clock
    notifier: Notifier
    resend_after: timedelta = RESEND_AFTER
    notifier_timeout: timedelta = NOTIFIER_TIMEOUT
    subscriptions: frozenset[str] = field(
        default=frozenset({"OrderConfirmed", "OrderCancelled"}), init=False
    )
    _after_commit: QuietAfterCommit = field(init=False, repr=False)
    _unsent: Waiting[Notification] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._after_commit = QuietAfterCommit(self.clock, logger, "notifications")
        self._unsent = Waiting(self._read_unsent, lambda n: (n.created_at, n.id))

    async def handle(self, envelope: Envelope) -> None:
        if envelope.event_type in self.subscriptions:
            stored: list[Notification] = []
            await apply_once(self.uow, self.clock, envelope, self._storing(stored))
            await self._after_commit.run(lambda: self.send(stored), len(stored))

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        stored: list[Notification] = []
        await apply_batch(self.uow, self.clock, envelopes, self._storing(stored), around=around)
        await self._after_commit.run(lambda: self.send(stored), len(stored))

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

    async def send(self, notifications: Sequence[Notification]) -> int:
        """Send each (outside any transaction), then record the ones sent in one statement;
        return how many. If a send failed, the others are recorded, then
        ``NotifierUnavailable`` is raised, with how many were (``committed``)."""
        if not notifications:
            return 0

        def on_bug(notification: Notification, exc: Exception) -> None:
            logger.error(
                "the notifier failed on notification %s; it stays unsent",
                notification.id,
                exc_info=exc,
                extra={"order_id": str(notification.order_id)},
            )

        answered, failures = await call_each(
            notifications, self.notifier.send, each_within=self.notifier_timeout, on_bug=on_bug
        )
        if answered:
            async with self.uow() as uow:
                await uow.notifications.mark_sent([notification for notification, _ in answered])
                await uow.commit()
        if failures:
            raise NotifierUnavailable(
                f"the notifier failed on {len(failures)} of {len(notifications)} notifications "
                f"(they stay unsent): {failures[0]!r}",
                committed=len(answered),
            ) from failures[0]
        return len(answered)

    async def send_unsent(self, limit: int = 100, after: timedelta | None = None) -> int:
        """Send the notifications unsent for ``after`` (``resend_after``) or longer, ``limit``
        at a time, every page once; return how many were sent. If a send failed, the
        ``NotifierUnavailable`` is raised after the last page, counting what all the pages
        recorded as sent (``committed``)."""
        before = self.clock.now() - (self.resend_after if after is None else after)
        return await self._unsent.sweep(before, self.send, limit=limit, failed=NotifierUnavailable)

    async def longest_wait(self) -> timedelta:
        """How long the notification unsent longest has waited; zero if none."""
        return await self._unsent.longest(self.clock.now())

    async def _read_unsent(
        self, before: datetime, limit: int, after: Position | None
    ) -> Sequence[Notification]:
        async with self.uow() as uow:
            return await uow.notifications.unsent(before, limit, after=after)

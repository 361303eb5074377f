"""The notification service: one stored notification per terminal order, sent after commit."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.notification import (
    RESEND_AFTER,
    LoggingNotifier,
    NotificationService,
    NotifierUnavailable,
)
from core_saga.memory import (
    ManualClock,
    MemoryNotificationDatabase,
    MemoryNotificationUnitOfWork,
    MemoryNotifier,
)
from core_saga.messages import Envelope, Event, OrderCancelled, OrderConfirmed
from core_saga.notifications import Notification, NotificationType

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db(clock: ManualClock) -> MemoryNotificationDatabase:
    return MemoryNotificationDatabase(clock)


@pytest.fixture
def notifier() -> MemoryNotifier:
    return MemoryNotifier()


@pytest.fixture
def service(
    db: MemoryNotificationDatabase, clock: ManualClock, notifier: MemoryNotifier
) -> NotificationService:
    return NotificationService(db.unit_of_work, clock, notifier)


async def deliver(service: NotificationService, clock: ManualClock, event: Event) -> None:
    await service.handle(new_envelope(event, clock.now(), None))


async def test_a_confirmed_order_is_notified_once_to_its_customer(
    service: NotificationService,
    db: MemoryNotificationDatabase,
    clock: ManualClock,
    notifier: MemoryNotifier,
) -> None:
    order_id, customer = uuid4(), uuid4()
    await deliver(service, clock, OrderConfirmed(order_id=order_id, customer_id=customer))
    await deliver(service, clock, OrderConfirmed(order_id=order_id, customer_id=customer))
    await deliver(service, clock, OrderCancelled(order_id=order_id, reason="late"))
    [stored] = db.notifications.rows.values()
    assert (stored.type, stored.recipient, stored.created_at) == (
        NotificationType.ORDER_CONFIRMED,
        str(customer),
        clock.now(),
    )
    assert notifier.sent == [stored]


async def test_a_cancellation_without_customer_goes_to_unknown(
    service: NotificationService, notifier: MemoryNotifier, clock: ManualClock
) -> None:
    order_id = uuid4()
    await deliver(service, clock, OrderCancelled(order_id=order_id, reason="timeout"))
    [sent] = notifier.sent
    assert (sent.type, sent.recipient) == (NotificationType.ORDER_CANCELLED, "unknown")
    assert "timeout" in sent.message


class FailingCommit(MemoryNotificationUnitOfWork):
    async def commit(self) -> None:
        raise ConnectionError("database went away")


async def test_nothing_is_sent_when_the_transaction_fails(
    db: MemoryNotificationDatabase, clock: ManualClock, notifier: MemoryNotifier
) -> None:
    service = NotificationService(lambda: FailingCommit(db), clock, notifier)
    with pytest.raises(ConnectionError):
        await deliver(service, clock, OrderConfirmed(order_id=uuid4()))
    assert notifier.sent == []
    assert db.notifications.rows == {}
    assert db.processed_events.rows == {}


async def test_logging_notifier_logs_the_message(caplog: pytest.LogCaptureFixture) -> None:
    notification = Notification(
        uuid4(), uuid4(), NotificationType.ORDER_CONFIRMED, "someone", "hello", ManualClock().now()
    )
    with caplog.at_level(logging.INFO):
        await LoggingNotifier().send(notification)
    assert "hello" in caplog.text
    assert "someone" in caplog.text


# --- sent after the commit, again until recorded as sent ------------------------------------


def unsent(db: MemoryNotificationDatabase) -> list[UUID]:
    """The orders whose stored notification is not recorded as sent."""
    return [order_id for order_id, waiting in db.unsent.rows.items() if waiting]


class BrokenFor(MemoryNotifier):
    """A notifier whose adapter has a bug for one order: it raises what no outage raises."""

    def __init__(self, order_id: UUID) -> None:
        super().__init__()
        self.broken_for: UUID | None = order_id

    async def send(self, notification: Notification) -> None:
        if notification.order_id == self.broken_for:
            raise KeyError("template missing")
        await super().send(notification)


def batch(clock: ManualClock, *order_ids: UUID) -> list[Envelope]:
    return [new_envelope(OrderConfirmed(order_id=i), clock.now(), None) for i in order_ids]


async def test_a_sent_notification_is_recorded_as_sent(
    service: NotificationService, db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    await deliver(service, clock, OrderConfirmed(order_id=uuid4()))
    assert unsent(db) == []
    clock.advance(RESEND_AFTER)
    assert await service.send_unsent() == 0


async def test_a_notifier_outage_leaves_the_batch_unsent_for_the_sweep(
    service: NotificationService,
    db: MemoryNotificationDatabase,
    clock: ManualClock,
    notifier: MemoryNotifier,
) -> None:
    """Before, the send raised after the commit: the events were consumed, the inbox skipped
    their redelivery, and the notifications were never sent."""
    ids = [uuid4() for _ in range(3)]
    notifier.down = True
    await service.handle_batch(batch(clock, *ids))  # no error: the events are consumed
    assert sorted(unsent(db)) == sorted(ids)
    assert notifier.sent == []

    notifier.down = False
    clock.advance(RESEND_AFTER - timedelta(seconds=1))
    assert await service.send_unsent() == 0  # not yet: the batch may still be sending
    clock.advance(timedelta(seconds=1))
    assert await service.send_unsent() == 3
    assert sorted(n.order_id for n in notifier.sent) == sorted(ids)
    assert unsent(db) == []
    assert await service.send_unsent() == 0


async def test_the_sweep_fails_loudly_while_the_notifier_is_down(
    service: NotificationService,
    db: MemoryNotificationDatabase,
    clock: ManualClock,
    notifier: MemoryNotifier,
) -> None:
    notifier.down = True
    await deliver(service, clock, OrderConfirmed(order_id=uuid4()))
    clock.advance(RESEND_AFTER)
    with pytest.raises(NotifierUnavailable, match="failed on 1 of 1 notifications"):
        await service.send_unsent()
    assert len(unsent(db)) == 1
    assert await service.longest_wait() == RESEND_AFTER


async def test_a_bug_for_one_notification_sends_the_rest_and_is_logged(
    db: MemoryNotificationDatabase, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the first send that raised skipped every later one of its batch, for good."""
    broken, *fine = [uuid4() for _ in range(4)]
    notifier = BrokenFor(broken)
    service = NotificationService(db.unit_of_work, clock, notifier)
    with caplog.at_level(logging.ERROR, logger="core_saga.handlers.notification"):
        await service.handle_batch(batch(clock, broken, *fine))
    assert sorted(n.order_id for n in notifier.sent) == sorted(fine)
    assert unsent(db) == [broken]
    [bug] = [r for r in caplog.records if "the notifier failed on notification" in r.message]
    assert bug.exc_info is not None and bug.exc_info[0] is KeyError

    notifier.broken_for = None  # the fix deployed
    clock.advance(RESEND_AFTER)
    assert await service.send_unsent() == 1
    assert unsent(db) == []


async def test_a_send_whose_answer_was_lost_is_sent_again_and_the_notifier_dedups_it(
    service: NotificationService,
    db: MemoryNotificationDatabase,
    clock: ManualClock,
    notifier: MemoryNotifier,
) -> None:
    order_id = uuid4()
    notifier.answers_lost = True
    await deliver(service, clock, OrderConfirmed(order_id=order_id))
    assert [n.order_id for n in notifier.sent] == [order_id]  # it went out
    assert unsent(db) == [order_id]  # but nobody knows

    notifier.answers_lost = False
    clock.advance(RESEND_AFTER)
    assert await service.send_unsent() == 1
    assert [n.order_id for n in notifier.sent] == [order_id]  # once, by its id
    assert unsent(db) == []


class Hanging(MemoryNotifier):
    async def send(self, notification: Notification) -> None:
        await asyncio.sleep(3600)


async def test_a_hanging_send_times_out_and_stays_unsent(
    db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    service = NotificationService(
        db.unit_of_work, clock, Hanging(), notifier_timeout=timedelta(milliseconds=10)
    )
    order_id = uuid4()
    await deliver(service, clock, OrderConfirmed(order_id=order_id))
    assert unsent(db) == [order_id]


async def test_the_sweep_reads_every_page_once_past_one_that_keeps_failing(
    db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    """The oldest unsent notification fails every time; the ones after it, a page later,
    are still sent."""
    broken, *fine = [uuid4() for _ in range(5)]
    notifier = BrokenFor(broken)
    notifier.down = True
    service = NotificationService(db.unit_of_work, clock, notifier)
    for order_id in (broken, *fine):
        await deliver(service, clock, OrderConfirmed(order_id=order_id))
        clock.advance(timedelta(milliseconds=1))
    notifier.down = False
    clock.advance(RESEND_AFTER)
    with pytest.raises(NotifierUnavailable):
        await service.send_unsent(limit=2)
    assert unsent(db) == [broken]
    assert sorted(n.order_id for n in notifier.sent) == sorted(fine)

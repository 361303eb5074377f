"""The notification service: one stored notification per terminal order, sent after commit."""

from __future__ import annotations

import logging
from uuid import uuid4

import pytest
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.notification import LoggingNotifier, NotificationService
from core_saga.memory import (
    ManualClock,
    MemoryNotificationDatabase,
    MemoryNotificationUnitOfWork,
    MemoryNotifier,
)
from core_saga.messages import Event, OrderCancelled, OrderConfirmed
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

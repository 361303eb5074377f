"""The trace of a payment or notification sweep whose remote side failed on some rows after
it had recorded others: exported, since what it committed (events naming its spans as their
parents) happened. A sweep that recorded nothing before failing is still dropped.

The audit: ``GatewayUnavailable`` and ``NotifierUnavailable`` are outages, so ``run_job``
marked the step idle and ``IdleJobFilter`` dropped its whole trace, though ``settle`` had
committed other payments' outcomes, whose downstream traces then lacked their root.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from commerce_apps.jobs import JOB_IDLE, is_infrastructure, run_job
from commerce_apps.tracing import tracer_provider
from core_saga.handlers.notification import (
    RESEND_AFTER,
    NotificationService,
    NotifierUnavailable,
)
from core_saga.handlers.payment import SETTLE_AFTER, GatewayUnavailable, PaymentService
from core_saga.memory import (
    ManualClock,
    MemoryNotificationDatabase,
    MemoryNotifier,
    MemoryPaymentDatabase,
    ScriptedGateway,
)
from core_saga.messages import OrderConfirmed
from core_saga.notifications import Notification
from core_saga.payments import ChargeResult, PaymentStatus
from core_saga.ports import InfrastructureError
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.unit.test_notification_service import deliver as notify
from tests.unit.test_payment_service import cancelled, deliver, left_due, payments

pytestmark = pytest.mark.unit


class DownFor(ScriptedGateway):
    """Unreachable (an outage) for the orders in ``unreachable`` and the refunds of the
    payments in ``refunding``; answers the others."""

    def __init__(self) -> None:
        super().__init__(success_rate=1.0)
        self.unreachable: set[UUID] = set()
        self.refunding: set[UUID] = set()

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        if order_id in self.unreachable:
            raise InfrastructureError("the payment gateway is unreachable")
        return await super().charge(order_id, amount, currency)

    async def refund(self, payment_id: UUID, amount: Decimal) -> None:
        if payment_id in self.refunding:
            raise InfrastructureError("the payment gateway is unreachable")
        await super().refund(payment_id, amount)


class NotifierDownFor(MemoryNotifier):
    def __init__(self) -> None:
        super().__init__()
        self.failing: set[UUID] = set()

    async def send(self, notification: Notification) -> None:
        if notification.order_id in self.failing:
            raise InfrastructureError("the notifier is unreachable")
        await super().send(notification)


async def swept(
    name: str, step: Callable[[], Awaitable[int]], failure: type[Exception]
) -> tuple[list[ReadableSpan], Exception]:
    """Run ``step`` as ``every`` does, traced as a service is: the spans exported, and the
    exception the step raised."""
    exporter = InMemorySpanExporter()
    provider = tracer_provider("payment", exporter)  # with its IdleJobFilter
    assert provider is not None
    with pytest.raises(failure) as raised:
        await run_job(provider.get_tracer("commerce.jobs"), name, step, is_infrastructure)
    return list(exporter.get_finished_spans()), raised.value


def committed(exc: Exception) -> object:
    return getattr(exc, "committed", None)


async def due_payments(
    clock: ManualClock, gateway: DownFor, count: int
) -> tuple[MemoryPaymentDatabase, PaymentService, list[UUID]]:
    db = MemoryPaymentDatabase(clock)
    service = PaymentService(db.unit_of_work, clock, gateway)
    orders = [uuid4() for _ in range(count)]
    for order_id in orders:
        await left_due(service, clock, gateway, 1, order_id)
    clock.advance(SETTLE_AFTER)
    return db, service, orders


async def test_a_payment_sweep_that_settled_some_before_the_gateway_failed_is_exported() -> None:
    clock, gateway = ManualClock(), DownFor()
    db, service, (stuck, *fine) = await due_payments(clock, gateway, 3)
    gateway.unreachable.add(stuck)

    spans, exc = await swept("payment sweep", service.settle_stale, GatewayUnavailable)

    assert {p.order_id for p in payments(db) if p.status is PaymentStatus.SUCCEEDED} == set(fine)
    assert committed(exc) == 2
    [root] = spans
    assert root.name == "payment sweep" and root.parent is None
    assert root.attributes is not None and root.attributes[JOB_IDLE] is False
    assert root.status.status_code is StatusCode.ERROR  # the outage shows in the trace


async def test_a_payment_sweep_counts_what_every_page_committed() -> None:
    """The oldest fails on every read; the pages after it settle the rest."""
    clock, gateway = ManualClock(), DownFor()
    _, service, (stuck, *fine) = await due_payments(clock, gateway, 5)
    gateway.unreachable.add(stuck)

    spans, exc = await swept(
        "payment sweep", lambda: service.settle_stale(limit=2), GatewayUnavailable
    )

    assert committed(exc) == len(fine)
    assert [s.name for s in spans] == ["payment sweep"]


async def test_a_charge_recorded_before_its_refund_failed_counts_as_committed() -> None:
    """The order was cancelled while its charge waited: the charge that succeeded is
    recorded (PaymentSucceeded, to be refunded), then the refund's call fails."""
    clock, gateway = ManualClock(), DownFor()
    db, service, [order_id] = await due_payments(clock, gateway, 1)
    await deliver(service, clock, cancelled(order_id))
    [payment] = payments(db)
    gateway.refunding.add(payment.id)

    spans, exc = await swept("payment sweep", service.settle_stale, GatewayUnavailable)

    assert [p.status for p in payments(db)] == [PaymentStatus.REFUNDING]
    assert committed(exc) == 1
    assert [s.name for s in spans] == ["payment sweep"]


async def test_a_payment_sweep_that_settled_nothing_is_still_dropped() -> None:
    clock, gateway = ManualClock(), DownFor()
    _, service, orders = await due_payments(clock, gateway, 2)
    gateway.unreachable.update(orders)

    spans, exc = await swept("payment sweep", service.settle_stale, GatewayUnavailable)

    assert committed(exc) == 0
    assert spans == []


async def unsent_notifications(
    clock: ManualClock, notifier: NotifierDownFor, count: int
) -> tuple[NotificationService, list[UUID]]:
    service = NotificationService(MemoryNotificationDatabase(clock).unit_of_work, clock, notifier)
    orders = [uuid4() for _ in range(count)]
    notifier.down = True
    for order_id in orders:
        await notify(service, clock, OrderConfirmed(order_id=order_id))
        clock.advance(timedelta(milliseconds=1))
    notifier.down = False
    clock.advance(RESEND_AFTER)
    return service, orders


async def test_a_notification_sweep_that_sent_some_before_failing_is_exported() -> None:
    clock, notifier = ManualClock(), NotifierDownFor()
    service, (stuck, *fine) = await unsent_notifications(clock, notifier, 5)
    notifier.failing.add(stuck)

    spans, exc = await swept(
        "notification sweep", lambda: service.send_unsent(limit=2), NotifierUnavailable
    )

    assert sorted(n.order_id for n in notifier.sent) == sorted(fine)
    assert committed(exc) == len(fine)
    [root] = spans
    assert root.name == "notification sweep"
    assert root.attributes is not None and root.attributes[JOB_IDLE] is False


async def test_a_notification_sweep_that_sent_nothing_is_still_dropped() -> None:
    clock, notifier = ManualClock(), NotifierDownFor()
    service, orders = await unsent_notifications(clock, notifier, 2)
    notifier.failing.update(orders)

    spans, exc = await swept("notification sweep", service.send_unsent, NotifierUnavailable)

    assert committed(exc) == 0
    assert spans == []

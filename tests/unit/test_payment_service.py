"""The payment service: one charge per order, none after a cancel, a refund after one.

In two steps: what is due is committed, the gateway is called outside any transaction, and
its outcome recorded in a second one; the sweep settles what a failure or crash left due."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from core_saga.handlers.after_commit import CONCURRENCY, QUIET_FOR
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.payment import (
    SETTLE_AFTER,
    GatewayUnavailable,
    PaymentService,
    SimulatedGateway,
)
from core_saga.memory import ManualClock, MemoryPaymentDatabase, ScriptedGateway
from core_saga.messages import (
    Envelope,
    Event,
    LineItem,
    OrderCancelled,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    StockReserved,
    decode,
)
from core_saga.payments import ChargeResult, Payment, PaymentStatus
from core_saga.ports import InfrastructureError

pytestmark = pytest.mark.unit

MOUSE = UUID("11111111-1111-1111-1111-111111111111")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db(clock: ManualClock) -> MemoryPaymentDatabase:
    return MemoryPaymentDatabase(clock)


@pytest.fixture
def gateway() -> ScriptedGateway:
    return ScriptedGateway()


@pytest.fixture
def service(
    db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> PaymentService:
    return PaymentService(db.unit_of_work, clock, gateway)


def reserved(order_id: UUID) -> StockReserved:
    line = LineItem(product_id=MOUSE, quantity=3, unit_price=Decimal("33.33"))
    return StockReserved(
        order_id=order_id, items=(line,), total_amount=Decimal("99.99"), currency="EUR"
    )


def cancelled(order_id: UUID) -> OrderCancelled:
    return OrderCancelled(order_id=order_id, reason="timeout")


async def deliver(service: PaymentService, clock: ManualClock, event: Event) -> Envelope:
    envelope = new_envelope(event, clock.now(), None)
    await service.handle(envelope)
    return envelope


def sent(db: MemoryPaymentDatabase) -> list[Event]:
    return [decode(row.message.value).payload for row in db.outbox.rows]


def payments(db: MemoryPaymentDatabase) -> list[Payment]:
    return list(db.payments.rows.values())


async def test_a_reservation_is_charged_and_succeeds(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    gateway.decide(order_id, succeeded=True)
    await deliver(service, clock, reserved(order_id))
    [payment] = payments(db)
    assert (payment.status, payment.amount, payment.currency) == (
        PaymentStatus.SUCCEEDED,
        Decimal("99.99"),
        "EUR",
    )
    assert sent(db) == [
        PaymentSucceeded(order_id=order_id, payment_id=payment.id, amount=Decimal("99.99"))
    ]


async def test_a_declined_charge_fails_with_the_reason(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    gateway.decide(order_id, succeeded=False)
    await deliver(service, clock, reserved(order_id))
    [payment] = payments(db)
    assert (payment.status, payment.reason) == (
        PaymentStatus.FAILED,
        "Payment declined by provider",
    )
    assert sent(db) == [
        PaymentFailed(order_id=order_id, amount=Decimal("99.99"), reason=payment.reason)
    ]


async def test_an_order_is_charged_at_most_once(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    await deliver(service, clock, reserved(order_id))
    await deliver(service, clock, reserved(order_id))
    assert len(gateway.charges) == 1
    assert len(payments(db)) == 1
    assert len(sent(db)) == 1


async def test_no_charge_once_the_order_was_seen_cancelled(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    await deliver(service, clock, cancelled(order_id))
    await deliver(service, clock, reserved(order_id))
    assert gateway.charges == []
    assert payments(db) == []
    assert sent(db) == []


async def test_a_cancel_after_a_successful_charge_refunds_it_once(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    gateway.decide(order_id, succeeded=True)
    await deliver(service, clock, reserved(order_id))
    await deliver(service, clock, cancelled(order_id))
    await deliver(service, clock, cancelled(order_id))
    [payment] = payments(db)
    assert payment.status is PaymentStatus.REFUNDED
    assert gateway.refunds == [(payment.id, Decimal("99.99"))]
    assert sent(db)[1:] == [
        PaymentRefunded(order_id=order_id, payment_id=payment.id, amount=Decimal("99.99"))
    ]


async def test_a_cancel_after_a_failed_charge_refunds_nothing(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    gateway.decide(order_id, succeeded=False)
    await deliver(service, clock, reserved(order_id))
    await deliver(service, clock, cancelled(order_id))
    assert [p.status for p in payments(db)] == [PaymentStatus.FAILED]
    assert gateway.refunds == []
    assert len(sent(db)) == 1


@pytest.mark.parametrize(
    ("gateway", "succeeds"),
    [
        (SimulatedGateway(forced="success", success_rate=0.0), True),
        (SimulatedGateway(forced="failure", success_rate=1.0), False),
        (SimulatedGateway(success_rate=1.0), True),
        (SimulatedGateway(success_rate=0.0), False),
    ],
)
async def test_simulated_gateway_outcomes(gateway: SimulatedGateway, succeeds: bool) -> None:
    for _ in range(20):
        assert (await gateway.charge(uuid4(), Decimal(1), "EUR")).succeeded is succeeds


async def test_simulated_gateway_decides_from_the_order_id() -> None:
    gateway = SimulatedGateway(success_rate=0.5)
    orders = [uuid4() for _ in range(200)]
    first = [(await gateway.charge(order, Decimal(1), "EUR")).succeeded for order in orders]
    again = [(await gateway.charge(order, Decimal(2), "EUR")).succeeded for order in orders]
    assert first == again
    assert 60 < sum(first) < 140


# --- the two steps, and the sweep ---------------------------------------------------------


def causes(db: MemoryPaymentDatabase) -> list[UUID | None]:
    return [decode(row.message.value).causation_id for row in db.outbox.rows]


class LockCheckingGateway(ScriptedGateway):
    """Tries to hold the order, as another transaction would, while it is being charged."""

    def __init__(self, db: MemoryPaymentDatabase) -> None:
        super().__init__(success_rate=1.0)
        self.db = db
        self.free_when_called: list[bool] = []

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        async with self.db.unit_of_work() as uow:
            try:
                await asyncio.wait_for(uow.hold({order_id}), 0.5)
                self.free_when_called.append(True)
            except TimeoutError:
                self.free_when_called.append(False)
        return await super().charge(order_id, amount, currency)


async def test_the_gateway_is_called_after_the_commit_with_the_order_free(
    db: MemoryPaymentDatabase, clock: ManualClock
) -> None:
    gateway = LockCheckingGateway(db)
    service = PaymentService(db.unit_of_work, clock, gateway)
    first, second = uuid4(), uuid4()
    batch = [new_envelope(reserved(order_id), clock.now(), None) for order_id in (first, second)]
    await service.handle_batch(batch)
    assert gateway.free_when_called == [True, True]
    assert {p.status for p in payments(db)} == {PaymentStatus.SUCCEEDED}
    assert causes(db) == [e.event_id for e in batch]  # each outcome names its reservation


async def test_a_gateway_outage_leaves_the_charge_pending_for_the_sweep(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    gateway.decide(order_id, succeeded=True)
    gateway.down = True
    await deliver(service, clock, reserved(order_id))  # no error: the event is consumed
    assert [p.status for p in payments(db)] == [PaymentStatus.PENDING]
    assert sent(db) == []

    gateway.down = False
    clock.advance(SETTLE_AFTER - timedelta(seconds=1))
    assert await service.settle_stale() == 0  # not yet: the batch may still be calling
    clock.advance(timedelta(seconds=1))
    assert await service.settle_stale() == 1
    [payment] = payments(db)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert sent(db) == [
        PaymentSucceeded(order_id=order_id, payment_id=payment.id, amount=payment.amount)
    ]
    assert causes(db) == [order_id]  # swept: the order is the cause, as for the deadline sweep
    assert await service.settle_stale() == 0


async def test_the_sweep_fails_loudly_while_the_gateway_is_down(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    gateway.down = True
    await deliver(service, clock, reserved(uuid4()))
    clock.advance(SETTLE_AFTER)
    with pytest.raises(GatewayUnavailable, match="failed on 1 of 1 payments"):
        await service.settle_stale()
    assert [p.status for p in payments(db)] == [PaymentStatus.PENDING]


async def test_a_charge_pending_when_the_order_is_cancelled_is_refunded_once_it_succeeds(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    gateway.decide(order_id, succeeded=True)
    gateway.down = True
    await deliver(service, clock, reserved(order_id))
    await deliver(service, clock, cancelled(order_id))  # nothing to refund yet
    assert [p.status for p in payments(db)] == [PaymentStatus.PENDING]

    gateway.down = False
    clock.advance(SETTLE_AFTER)
    assert await service.settle_stale() == 1
    [payment] = payments(db)
    assert payment.status is PaymentStatus.REFUNDED
    assert gateway.refunds == [(payment.id, payment.amount)]
    amount = payment.amount
    assert sent(db) == [
        PaymentSucceeded(order_id=order_id, payment_id=payment.id, amount=amount),
        PaymentRefunded(order_id=order_id, payment_id=payment.id, amount=amount),
    ]


async def test_a_refund_that_failed_is_retried_by_the_sweep(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    order_id = uuid4()
    gateway.decide(order_id, succeeded=True)
    await deliver(service, clock, reserved(order_id))
    gateway.down = True
    await deliver(service, clock, cancelled(order_id))
    [payment] = payments(db)
    assert payment.status is PaymentStatus.REFUNDING
    assert len(sent(db)) == 1  # only PaymentSucceeded

    gateway.down = False
    clock.advance(SETTLE_AFTER)
    assert await service.settle_stale() == 1
    assert [p.status for p in payments(db)] == [PaymentStatus.REFUNDED]
    assert sent(db)[1:] == [
        PaymentRefunded(order_id=order_id, payment_id=payment.id, amount=payment.amount)
    ]


async def test_two_settlements_of_one_payment_record_one_outcome(
    service: PaymentService, db: MemoryPaymentDatabase, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    """A replica's sweep and a slow batch, say: both call (the gateway deduplicates), one
    records."""
    gateway.down = True
    await deliver(service, clock, reserved(uuid4()))
    [pending] = payments(db)
    gateway.down = False
    settled = await asyncio.gather(
        service.settle([(pending, None, {})]), service.settle([(pending, None, {})])
    )
    assert sorted(settled) == [0, 1]
    assert len(sent(db)) == 1
    assert len(gateway.charges) == 1


async def test_a_batch_calls_the_gateway_concurrently_but_bounded(
    service: PaymentService, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    in_flight, most = 0, 0
    charge = gateway.charge

    async def slow_charge(order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return await charge(order_id, amount, currency)

    gateway.charge = slow_charge  # type: ignore[method-assign]
    batch: list[Envelope] = [
        new_envelope(reserved(uuid4()), clock.now(), None) for _ in range(CONCURRENCY * 2)
    ]
    await service.handle_batch(batch)
    assert most == CONCURRENCY
    assert len(gateway.charges) == CONCURRENCY * 2


async def test_settlements_that_fail_after_a_batch_warn_at_most_every_quiet_period(
    service: PaymentService,
    clock: ManualClock,
    gateway: ScriptedGateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="core_saga.handlers.payment")
    gateway.down = True
    for _ in range(3):
        await deliver(service, clock, reserved(uuid4()))
    clock.advance(QUIET_FOR)
    await deliver(service, clock, reserved(uuid4()))
    warnings = [r for r in caplog.records if r.name == "core_saga.handlers.payment"]
    assert len(warnings) == 2
    assert "the sweep tries again later" in warnings[0].getMessage()


async def test_the_longest_wait_is_that_of_the_payment_due_longest(
    service: PaymentService, clock: ManualClock, gateway: ScriptedGateway
) -> None:
    assert await service.longest_wait() == timedelta(0)
    gateway.down = True
    await deliver(service, clock, reserved(uuid4()))
    clock.advance(timedelta(seconds=5))
    await deliver(service, clock, reserved(uuid4()))
    clock.advance(timedelta(seconds=7))
    assert await service.longest_wait() == timedelta(seconds=12)
    gateway.down = False
    await service.settle_stale(after=timedelta(0))
    assert await service.longest_wait() == timedelta(0)


def statuses(db: MemoryPaymentDatabase) -> dict[UUID, PaymentStatus]:
    return {p.order_id: p.status for p in payments(db)}


async def left_due(
    service: PaymentService,
    clock: ManualClock,
    gateway: ScriptedGateway,
    count: int,
    order_id: UUID | None = None,
) -> None:
    """``count`` charges left due, a millisecond apart, the gateway down meanwhile."""
    gateway.down = True
    for _ in range(count):
        clock.advance(timedelta(milliseconds=1))
        await deliver(service, clock, reserved(order_id or uuid4()))
    gateway.down = False


class FailingGateway(ScriptedGateway):
    """Hangs, or raises ``error``, on the orders in ``failing``; answers the others."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__(success_rate=1.0)
        self.error = error
        self.failing: set[UUID] = set()

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        if order_id in self.failing:
            if self.error is not None:
                raise self.error
            await asyncio.Event().wait()  # never answers
        return await super().charge(order_id, amount, currency)


async def test_a_gateway_call_that_hangs_times_out_and_leaves_the_payment_due(
    db: MemoryPaymentDatabase, clock: ManualClock
) -> None:
    gateway = FailingGateway()
    service = PaymentService(
        db.unit_of_work, clock, gateway, gateway_timeout=timedelta(milliseconds=50)
    )
    hanging, answered = uuid4(), uuid4()
    gateway.failing.add(hanging)
    batch = [new_envelope(reserved(i), clock.now(), None) for i in (hanging, answered)]
    async with asyncio.timeout(10):  # without the call's timeout: forever
        await service.handle_batch(batch)
    assert statuses(db) == {hanging: PaymentStatus.PENDING, answered: PaymentStatus.SUCCEEDED}


async def test_a_bug_in_the_gateway_is_logged_as_one_and_holds_back_no_other_payment(
    db: MemoryPaymentDatabase, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Not an outage (an adapter rejecting what it was given): an ERROR with its traceback,
    every time; the payment stays due, the rest are recorded, the sweep goes past it."""
    caplog.set_level(logging.WARNING, logger="core_saga.handlers.payment")
    gateway = FailingGateway(TypeError("charge() got an unexpected keyword"))
    service = PaymentService(db.unit_of_work, clock, gateway)
    broken, fine = uuid4(), uuid4()
    gateway.failing.add(broken)
    batch = [new_envelope(reserved(i), clock.now(), None) for i in (broken, fine)]
    await service.handle_batch(batch)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert statuses(db) == {broken: PaymentStatus.PENDING, fine: PaymentStatus.SUCCEEDED}

    await left_due(service, clock, gateway, 12)
    clock.advance(SETTLE_AFTER)
    with pytest.raises(GatewayUnavailable, match="failed on 1 of 5 payments"):
        await service.settle_stale(limit=5)
    assert [p.order_id for p in payments(db) if p.status.due] == [broken]
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 2


async def test_a_payment_that_keeps_failing_does_not_hold_back_the_sweep(
    db: MemoryPaymentDatabase, clock: ManualClock
) -> None:
    """The longest waiting comes first on every read; the sweep goes on through every page
    and says it failed at the end."""
    gateway = FailingGateway(InfrastructureError("declined by the network"))
    service = PaymentService(db.unit_of_work, clock, gateway)
    stuck = uuid4()
    gateway.failing.add(stuck)
    await left_due(service, clock, gateway, 1, stuck)
    await left_due(service, clock, gateway, 24)
    clock.advance(SETTLE_AFTER)
    with pytest.raises(GatewayUnavailable, match="failed on 1 of 10 payments"):
        await service.settle_stale(limit=10)
    waiting = [p.order_id for p in payments(db) if p.status.due]
    assert waiting == [stuck]

"""The payment service: one charge per order, none after a cancel, a refund after one."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.payment import PaymentService, SimulatedGateway
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
from core_saga.payments import Payment, PaymentStatus

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

"""The saga harness: whole-saga stories under chosen interleavings, and the invariant checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import pytest
from core_saga.invariants import SagaSnapshot, invariant_violations
from core_saga.inventory import SEED_PRODUCTS, ReservationStatus
from core_saga.memory import SagaHarness, order_request
from core_saga.messages import INVENTORY_TOPIC, ORDER_TOPIC, PAYMENT_TOPIC
from core_saga.orders import OrderStatus
from core_saga.payments import PaymentStatus

pytestmark = pytest.mark.unit

MOUSE, KEYBOARD, HUB, MONITOR, STAND = (product.id for product in SEED_PRODUCTS)


async def placed(harness: SagaHarness, succeeds: bool, **quantities: int) -> UUID:
    ids = {"mouse": MOUSE, "monitor": MONITOR, "stand": STAND}
    await harness.place_order(order_request({ids[k]: v for k, v in quantities.items()}))
    order_id = harness.order_ids[-1]
    harness.gateway.decide(order_id, succeeds)
    return order_id


async def drain(harness: SagaHarness, service: str, topic: str) -> None:
    """Relay everything, then deliver every message of one service's topic."""
    await harness.relay()
    for cursor in harness.pending():
        if (cursor.service, cursor.topic) == (service, topic):
            while await harness.deliver(cursor):
                pass


async def status(harness: SagaHarness, order_id: UUID) -> OrderStatus | None:
    order = (await harness.snapshot()).orders[order_id]
    return None if order is None else order.status


async def test_a_paid_order_is_confirmed_and_sold() -> None:
    harness = SagaHarness()
    order_id = await placed(harness, True, mouse=2, monitor=1)
    assert await harness.run_until_quiet() > 0
    snapshot = await harness.snapshot()
    assert await status(harness, order_id) is OrderStatus.CONFIRMED
    assert snapshot.products[MOUSE].sold == 2
    assert await harness.violations() == []
    assert [n.order_id for n in harness.notifier.sent] == [order_id]


async def test_a_declined_order_is_cancelled_and_its_stock_released() -> None:
    harness = SagaHarness()
    order_id = await placed(harness, False, stand=7)
    await harness.run_until_quiet()
    snapshot = await harness.snapshot()
    assert await status(harness, order_id) is OrderStatus.CANCELLED
    assert snapshot.products[STAND].stock == 200
    assert await harness.violations() == []


async def test_the_payment_may_overtake_the_reservation() -> None:
    harness = SagaHarness()
    order_id = await placed(harness, True, mouse=1)
    await drain(harness, "inventory", ORDER_TOPIC)
    await drain(harness, "payment", INVENTORY_TOPIC)
    await drain(harness, "order", PAYMENT_TOPIC)  # before the order saw StockReserved
    assert await status(harness, order_id) is OrderStatus.CONFIRMED
    await harness.run_until_quiet()
    assert await harness.violations() == []


async def test_a_timeout_after_the_charge_refunds_it() -> None:
    harness = SagaHarness()
    order_id = await placed(harness, True, mouse=1)
    await drain(harness, "inventory", ORDER_TOPIC)
    await drain(harness, "payment", INVENTORY_TOPIC)
    harness.clock.advance(timedelta(seconds=30))
    assert await harness.sweep() == 1
    await harness.run_until_quiet()
    snapshot = await harness.snapshot()
    assert await status(harness, order_id) is OrderStatus.CANCELLED
    assert [p.status for p in snapshot.payments[order_id]] == [PaymentStatus.REFUNDED]
    assert await harness.violations() == []


async def test_a_timeout_before_the_reservation_leaves_a_tombstone() -> None:
    harness = SagaHarness()
    order_id = await placed(harness, True, monitor=30)
    harness.clock.advance(timedelta(minutes=5))
    await harness.sweep()
    await harness.run_until_quiet()
    snapshot = await harness.snapshot()
    reservation = snapshot.reservations[order_id]
    assert reservation is not None
    assert reservation.status is ReservationStatus.RELEASED
    assert snapshot.products[MONITOR].stock == 30
    assert harness.gateway.charges == []
    assert await harness.violations() == []


async def test_a_crash_before_commit_redelivers_and_applies_once() -> None:
    harness = SagaHarness()
    order_id = await placed(harness, True, mouse=3)
    await harness.relay()
    [cursor] = [c for c in harness.pending() if c.service == "inventory"]
    assert await harness.deliver(cursor, crash_before_commit=True)
    assert (await harness.snapshot()).products[MOUSE].reserved == 0
    assert cursor in harness.pending()
    await harness.run_until_quiet()
    assert await status(harness, order_id) is OrderStatus.CONFIRMED
    assert await harness.violations() == []


async def test_duplicates_have_no_second_effect() -> None:
    harness = SagaHarness()
    await placed(harness, True, mouse=3)
    await placed(harness, False, stand=3)
    await harness.run_until_quiet()
    for topic, partition, offset in harness.records():
        harness.duplicate(topic, partition, offset)
    await harness.run_until_quiet()
    assert len(harness.gateway.charges) == 2
    assert len(harness.notifier.sent) == 2
    assert await harness.violations() == []


async def test_poison_is_dead_lettered_without_blocking_the_partition() -> None:
    harness = SagaHarness(partitions=1)
    harness.inject(ORDER_TOPIC, "some-key", b"\xff not json")
    order_id = await placed(harness, True, mouse=1)
    await harness.run_until_quiet()
    assert await status(harness, order_id) is OrderStatus.CONFIRMED
    assert {letter.cursor.service for letter in harness.dead_letters} == {
        "inventory",
        "payment",
        "notification",
    }
    assert all(letter.reason.startswith("value is not") for letter in harness.dead_letters)
    assert any("dead-lettered" in problem for problem in await harness.violations())


async def test_undelivered_messages_and_open_orders_are_violations() -> None:
    harness = SagaHarness()
    await placed(harness, True, mouse=1)
    await harness.relay()
    problems = await harness.violations()
    assert any("not terminal" in problem for problem in problems)
    assert any("undelivered" in problem for problem in problems)


async def confirmed_and_cancelled() -> tuple[SagaHarness, SagaSnapshot, UUID, UUID]:
    harness = SagaHarness()
    confirmed = await placed(harness, True, mouse=2)
    cancelled = await placed(harness, False, stand=2)
    await harness.run_until_quiet()
    return harness, await harness.snapshot(), confirmed, cancelled


async def test_the_checks_catch_each_broken_invariant() -> None:
    harness, good, confirmed, cancelled = await confirmed_and_cancelled()
    initial = harness.initial_stock
    assert invariant_violations(good, initial) == []

    mouse = good.products[MOUSE]
    leaked = {**good.products, MOUSE: replace(mouse, stock=mouse.stock - 1)}
    oversold = {**good.products, MOUSE: replace(mouse, stock=mouse.stock - 1, sold=mouse.sold + 1)}
    unpaid = {**good.payments, confirmed: []}
    paid_twice = {**good.payments, confirmed: [*good.payments[confirmed]] * 2}
    still_charged = {
        **good.payments,
        cancelled: [replace(p, status=PaymentStatus.SUCCEEDED) for p in good.payments[cancelled]],
    }
    held = good.reservations[cancelled]
    assert held is not None
    still_held = {**good.reservations, cancelled: replace(held, status=ReservationStatus.RESERVED)}
    silent = {**good.notifications, confirmed: []}
    order = good.orders[confirmed]
    assert order is not None
    open_order = {**good.orders, confirmed: replace(order, status=OrderStatus.STOCK_RESERVED)}
    broken = {  # what each breaks → the report it must produce
        "stock+reserved+sold=": replace(good, products=leaked),
        "but confirmed orders bought": replace(good, products=oversold),
        "succeeded payments, not 1": replace(good, payments=unpaid),
        "was charged 2 times": replace(good, payments=paid_twice),
        "has a succeeded payment": replace(good, payments=still_charged),
        "still holds reservation": replace(good, reservations=still_held),
        "has notifications": replace(good, notifications=silent),
        "is not terminal": replace(good, orders=open_order),
    }
    for expected, snapshot in broken.items():
        violations = invariant_violations(snapshot, initial)
        assert any(expected in violation for violation in violations), (expected, violations)

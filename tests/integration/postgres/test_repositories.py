"""Repositories round-trip the domain objects and lock the way the handlers rely on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from adapters_postgres.uow import (
    inventory_uow_factory,
    notification_uow_factory,
    order_uow_factory,
    payment_uow_factory,
)
from core_saga.inventory import SEED_PRODUCTS, Product, Reservation, ReservationStatus
from core_saga.messages import LineItem
from core_saga.notifications import Notification, NotificationType
from core_saga.orders import Order, OrderStatus
from core_saga.payments import Payment, PaymentStatus
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import wait_for_lock_waiters

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MOUSE, KEYBOARD = SEED_PRODUCTS[0].id, SEED_PRODUCTS[1].id


def new_order(at: datetime = T0) -> Order:
    items = (
        LineItem(product_id=KEYBOARD, quantity=1, unit_price=Decimal("89.90")),
        LineItem(product_id=MOUSE, quantity=3, unit_price=Decimal("19.99")),
    )
    return Order.place(uuid4(), uuid4(), items, "EUR", at, uuid4())


async def test_an_order_round_trips_with_items_in_order_and_its_history(
    order_engine: AsyncEngine,
) -> None:
    order = new_order()
    async with order_uow_factory(order_engine)() as uow:
        await uow.orders.add(order)
        await uow.commit()
    async with order_uow_factory(order_engine)() as uow:
        loaded = await uow.orders.get(order.id, for_update=True)
        assert loaded == order
        assert loaded is not None
        loaded.stock_reserved(T0 + timedelta(seconds=1), uuid4())
        await uow.orders.save(loaded)
        loaded.payment_succeeded(T0 + timedelta(seconds=2), uuid4())
        await uow.orders.save(loaded)
        await uow.commit()
    async with order_uow_factory(order_engine)() as uow:
        again = await uow.orders.get(order.id)
        assert again == loaded
        assert again is not None
        assert [c.status for c in again.history] == [
            OrderStatus.PENDING,
            OrderStatus.STOCK_RESERVED,
            OrderStatus.CONFIRMED,
        ]
        assert again.total_amount == Decimal("149.87")
        assert await uow.orders.get(uuid4()) is None


async def test_a_cancellation_saved_without_a_read_appends_only_the_new_history(
    order_engine: AsyncEngine,
) -> None:
    order = new_order()
    async with order_uow_factory(order_engine)() as uow:
        await uow.orders.add(order)
        await uow.commit()
    order.cancel("timeout", T0 + timedelta(seconds=31), uuid4(), "OrderCancelled")
    async with order_uow_factory(order_engine)() as uow:
        await uow.orders.save(order)
        await uow.commit()
    async with order_uow_factory(order_engine)() as uow:
        assert await uow.orders.get(order.id) == order


async def test_replicas_sweeping_overdue_orders_take_different_ones(
    order_engine: AsyncEngine,
) -> None:
    at = datetime(2020, 1, 1, tzinfo=UTC)  # older than any other test's orders
    orders = [new_order(at + timedelta(seconds=i)) for i in range(4)]
    async with order_uow_factory(order_engine)() as uow:
        for order in orders:
            await uow.orders.add(order)
        await uow.commit()
    now = at + timedelta(minutes=5)
    async with order_uow_factory(order_engine)() as one, order_uow_factory(order_engine)() as two:
        first = await one.orders.overdue(now, 2)
        second = await two.orders.overdue(now, 10)
    assert [o.id for o in first] == [o.id for o in orders[:2]]
    assert {o.id for o in orders[2:]} <= {o.id for o in second}
    assert not {o.id for o in first} & {o.id for o in second}
    assert all(o.items == orders[0].items for o in first)


async def test_products_lock_known_ids_and_save(inventory_engine: AsyncEngine) -> None:
    unknown = UUID("99999999-9999-9999-9999-999999999999")
    async with inventory_uow_factory(inventory_engine)() as uow:
        locked = await uow.products.lock([KEYBOARD, unknown, MOUSE])
        assert list(locked) == [MOUSE, KEYBOARD]
        locked[MOUSE].stock -= 2
        locked[MOUSE].reserved += 2
        await uow.products.save(list(locked.values()))
        await uow.commit()
    async with inventory_uow_factory(inventory_engine)() as uow:
        assert await uow.products.get(MOUSE) == Product(MOUSE, "Wireless Mouse", 98, 2, 0)
        assert await uow.products.get(unknown) is None
        assert [p.id for p in await uow.products.list()] == [p.id for p in SEED_PRODUCTS]


async def test_reservations_round_trip_and_a_release_leaves_a_tombstone(
    inventory_engine: AsyncEngine,
) -> None:
    held = Reservation(uuid4(), {MOUSE: 1, KEYBOARD: 2}, ReservationStatus.RESERVED)
    tombstone = Reservation(uuid4(), {}, ReservationStatus.RELEASED)
    async with inventory_uow_factory(inventory_engine)() as uow:
        await uow.reservations.add(held)
        await uow.reservations.add(tombstone)
        await uow.commit()
    async with inventory_uow_factory(inventory_engine)() as uow:
        loaded = await uow.reservations.get(held.order_id, for_update=True)
        assert loaded == held
        assert loaded is not None
        loaded.status = ReservationStatus.SOLD
        await uow.reservations.save(loaded)
        await uow.commit()
    async with inventory_uow_factory(inventory_engine)() as uow:
        assert await uow.reservations.get(held.order_id) == loaded
        assert await uow.reservations.get(tombstone.order_id) == tombstone
        assert await uow.reservations.get(uuid4()) is None


async def test_payments_round_trip_and_remember_cancellations(
    payment_engine: AsyncEngine,
) -> None:
    payment = Payment(uuid4(), uuid4(), Decimal("10.50"), "EUR", PaymentStatus.SUCCEEDED, None, T0)
    async with payment_uow_factory(payment_engine)() as uow:
        await uow.payments.lock_order(payment.order_id)
        await uow.payments.add(payment)
        await uow.payments.mark_cancelled(payment.order_id)
        await uow.payments.mark_cancelled(payment.order_id)
        await uow.commit()
    async with payment_uow_factory(payment_engine)() as uow:
        found = await uow.payments.get_by_order(payment.order_id)
        assert found == payment
        assert found is not None
        found.status, found.updated_at = PaymentStatus.REFUNDED, T0 + timedelta(seconds=5)
        await uow.payments.save(found)
        await uow.commit()
    async with payment_uow_factory(payment_engine)() as uow:
        assert list(await uow.payments.list(payment.order_id)) == [found]
        assert found in await uow.payments.list()
        assert await uow.payments.was_cancelled(payment.order_id)
        assert not await uow.payments.was_cancelled(uuid4())
        assert await uow.payments.get_by_order(uuid4()) is None


async def test_lock_order_serialises_payment_work_on_one_order(
    payment_engine: AsyncEngine,
) -> None:
    order_id = uuid4()
    steps: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with payment_uow_factory(payment_engine)() as uow:
            await uow.payments.lock_order(order_id)
            holding.set()
            await release.wait()
            steps.append("first commits")
            await uow.commit()

    async def second() -> None:
        await holding.wait()
        async with payment_uow_factory(payment_engine)() as uow:
            await uow.payments.lock_order(order_id)
            steps.append("second locked")
            await uow.commit()

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await holding.wait()
    await wait_for_lock_waiters(payment_engine, 1)
    release.set()
    await asyncio.gather(*tasks)
    assert steps == ["first commits", "second locked"]


async def test_one_notification_per_order(notification_engine: AsyncEngine) -> None:
    order_id = uuid4()
    confirmed = Notification(
        uuid4(), order_id, NotificationType.ORDER_CONFIRMED, "c@example.com", "Confirmed", T0
    )
    again = Notification(
        uuid4(), order_id, NotificationType.ORDER_CANCELLED, "c@example.com", "Cancelled", T0
    )
    async with notification_uow_factory(notification_engine)() as uow:
        assert await uow.notifications.add(confirmed)
        assert not await uow.notifications.add(again)
        await uow.commit()
    async with notification_uow_factory(notification_engine)() as uow:
        assert list(await uow.notifications.list(order_id)) == [confirmed]
        assert confirmed in await uow.notifications.list()

"""OrderRepository: orders round-trip with items, money and history; the deadline sweep."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

from core_saga.memory import ManualClock
from core_saga.orders import Order, OrderStatus
from core_saga.ports import OrderUnitOfWork

from tests.contract.builders import assert_waiting, new_order
from tests.contract.conftest import Database


async def add(orders: Database[OrderUnitOfWork], *added: Order) -> None:
    async with orders.unit_of_work() as uow:
        for order in added:
            await uow.orders.add(order)
        await uow.commit()


async def get(orders: Database[OrderUnitOfWork], order: Order) -> Order | None:
    async with orders.unit_of_work() as uow:
        return await uow.orders.get(order.id)


async def test_an_order_round_trips(orders: Database[OrderUnitOfWork], clock: ManualClock) -> None:
    order = new_order(clock.now())
    await add(orders, order)

    async with orders.unit_of_work() as uow:
        found = await uow.orders.get(order.id)
        assert await uow.orders.get(order.id, for_update=True) == found
        assert await uow.orders.get(uuid4()) is None
    assert found == order
    assert found.items == order.items  # in their order, each price a Decimal
    assert all(isinstance(item.unit_price, Decimal) for item in found.items)
    assert found.total_amount == Decimal("149.87")
    assert found.history == order.history
    assert (found.created_at, found.updated_at, found.deadline_at) == (
        order.created_at,
        order.updated_at,
        order.deadline_at,
    )


async def test_save_persists_status_reason_and_new_history(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    order = new_order(clock.now())
    await add(orders, order)

    async with orders.unit_of_work() as uow:
        reserved = await uow.orders.get(order.id, for_update=True)
        assert reserved is not None
        assert reserved.stock_reserved(clock.advance(timedelta(seconds=1)), uuid4())
        await uow.orders.save(reserved)
        await uow.commit()
    assert await get(orders, order) == reserved

    assert reserved.cancel("Payment declined", clock.advance(timedelta(seconds=1)), uuid4(), "PF")
    async with orders.unit_of_work() as uow:  # saved without being read in this transaction
        await uow.orders.save(reserved)
        await uow.commit()

    found = await get(orders, order)
    assert found == reserved
    assert found is not None
    assert found.status is OrderStatus.CANCELLED
    assert found.cancellation_reason == "Payment declined"
    assert found.updated_at == clock.now()
    assert [change.status for change in found.history] == [
        OrderStatus.PENDING,
        OrderStatus.STOCK_RESERVED,
        OrderStatus.CANCELLED,
    ]


async def test_overdue_returns_open_orders_past_their_deadline(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    start = clock.now()
    pending = new_order(start, timedelta(seconds=10))
    reserved = new_order(start, timedelta(seconds=20))
    due_now = new_order(start, timedelta(seconds=30))  # deadline == now counts as overdue
    not_yet = new_order(start, timedelta(seconds=31))
    confirmed = new_order(start, timedelta(seconds=5))
    cancelled = new_order(start, timedelta(seconds=5))
    assert reserved.stock_reserved(start, uuid4())
    assert confirmed.payment_succeeded(start, uuid4())
    assert cancelled.cancel("Out of stock", start, uuid4(), "StockRejected")
    await add(orders, pending, reserved, due_now, not_yet, confirmed, cancelled)
    now = clock.advance(timedelta(seconds=30))

    async with orders.unit_of_work() as uow:
        due = await uow.orders.overdue(now, 10)
    assert {order.id for order in due} == {pending.id, reserved.id, due_now.id}
    assert next(order for order in due if order.id == reserved.id) == reserved

    async with orders.unit_of_work() as uow:
        limited = await uow.orders.overdue(now, 2)
    assert len(limited) == 2
    assert {order.id for order in limited} <= {pending.id, reserved.id, due_now.id}


async def test_overdue_skips_orders_another_transaction_holds(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    held, free = new_order(clock.now()), new_order(clock.now())
    await add(orders, held, free)
    now = clock.advance(timedelta(minutes=1))

    async with orders.unit_of_work() as first, orders.unit_of_work() as second:
        assert await first.orders.get(held.id, for_update=True) is not None
        due = await asyncio.wait_for(second.orders.overdue(now, 10), 10)  # does not wait
        assert [order.id for order in due] == [free.id]


async def test_reading_an_order_for_update_makes_the_next_reader_wait(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    order = new_order(clock.now())
    await add(orders, order)

    async def read_for_update() -> Order | None:
        async with orders.unit_of_work() as uow:
            return await uow.orders.get(order.id, for_update=True)

    async with orders.unit_of_work() as first:
        held = await first.orders.get(order.id, for_update=True)
        assert held is not None
        second = asyncio.create_task(read_for_update())
        await assert_waiting(second)
        assert held.stock_reserved(clock.now(), uuid4())
        await first.orders.save(held)
        await first.commit()
    assert await asyncio.wait_for(second, 10) == held

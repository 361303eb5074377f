"""The in-memory adapters keep real transaction semantics: commit, rollback, row locks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from core_saga.inventory import SEED_PRODUCTS
from core_saga.memory import (
    ManualClock,
    MemoryInventoryDatabase,
    MemoryNotificationDatabase,
    MemoryOrderDatabase,
    MemoryPaymentDatabase,
)
from core_saga.messages import LineItem
from core_saga.notifications import Notification, NotificationType
from core_saga.orders import Order
from core_saga.payments import Payment, PaymentStatus

pytestmark = pytest.mark.unit

MOUSE = SEED_PRODUCTS[0].id


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def new_order(clock: ManualClock) -> Order:
    line = LineItem(product_id=MOUSE, quantity=1, unit_price=Decimal(1))
    return Order.place(uuid4(), uuid4(), (line,), "EUR", clock.now(), uuid4())


async def test_writes_are_invisible_until_commit(clock: ManualClock) -> None:
    db = MemoryInventoryDatabase(clock)
    async with db.unit_of_work() as writer, db.unit_of_work() as reader:
        [mouse] = (await writer.products.lock([MOUSE])).values()
        mouse.stock -= 1
        await writer.products.save([mouse])
        assert (await writer.products.get(MOUSE)).stock == 99  # type: ignore[union-attr]
        assert (await reader.products.get(MOUSE)).stock == 100  # type: ignore[union-attr]
        await writer.commit()
        assert (await reader.products.get(MOUSE)).stock == 99  # type: ignore[union-attr]


async def test_returned_rows_are_copies(clock: ManualClock) -> None:
    db = MemoryInventoryDatabase(clock)
    async with db.unit_of_work() as uow:
        mouse = await uow.products.get(MOUSE)
        assert mouse is not None
        mouse.stock = 0
        await uow.commit()
    assert db.products.rows[MOUSE].stock == 100


async def test_leaving_without_commit_or_by_an_exception_discards_everything(
    clock: ManualClock,
) -> None:
    db = MemoryOrderDatabase(clock)
    order = new_order(clock)
    async with db.unit_of_work() as uow:
        await uow.orders.add(order)
        assert await uow.inbox.mark_processed(uuid4(), "X")

    async def fail() -> None:
        async with db.unit_of_work() as uow:
            await uow.orders.add(order)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await fail()
    assert db.orders.rows == {}
    assert db.processed_events.rows == {}
    assert db.outbox.rows == []


async def test_a_row_lock_waits_for_the_other_transaction(clock: ManualClock) -> None:
    db = MemoryOrderDatabase(clock)
    order = new_order(clock)
    async with db.unit_of_work() as uow:
        await uow.orders.add(order)
        await uow.commit()
    steps: list[str] = []

    async def first() -> None:
        async with db.unit_of_work() as uow:
            locked = await uow.orders.get(order.id, for_update=True)
            assert locked is not None
            steps.append("first locked")
            await asyncio.sleep(0.01)
            locked.cancellation_reason = "first"
            await uow.orders.save(locked)
            await uow.commit()
            steps.append("first committed")

    async def second() -> None:
        await asyncio.sleep(0)
        async with db.unit_of_work() as uow:
            locked = await uow.orders.get(order.id, for_update=True)
            steps.append(f"second saw {locked.cancellation_reason if locked else None}")

    await asyncio.gather(first(), second())
    assert steps == ["first locked", "first committed", "second saw first"]


async def test_the_sweep_skips_orders_locked_by_another_transaction(clock: ManualClock) -> None:
    db = MemoryOrderDatabase(clock)
    a, b = new_order(clock), new_order(clock)
    async with db.unit_of_work() as uow:
        await uow.orders.add(a)
        await uow.orders.add(b)
        await uow.commit()
    clock.advance(timedelta(minutes=1))
    async with db.unit_of_work() as holder, db.unit_of_work() as sweeper:
        await holder.orders.get(a.id, for_update=True)
        assert [o.id for o in await sweeper.orders.overdue(clock.now(), 10)] == [b.id]


async def test_an_idempotency_claim_waits_and_then_sees_the_stored_response(
    clock: ManualClock,
) -> None:
    db = MemoryOrderDatabase(clock)
    later = clock.now() + timedelta(hours=1)

    async def first() -> None:
        async with db.unit_of_work() as uow:
            assert await uow.idempotency.claim("k", "h", clock.now(), later) is None
            await asyncio.sleep(0.01)
            await uow.idempotency.save_response("k", 201, {"id": 1})
            await uow.commit()

    async def second() -> object:
        await asyncio.sleep(0)
        async with db.unit_of_work() as uow:
            return await uow.idempotency.claim("k", "h", clock.now(), later)

    _, stored = await asyncio.gather(first(), second())
    assert stored is not None
    assert (stored.request_hash, stored.status_code, stored.body) == ("h", 201, {"id": 1})  # type: ignore[attr-defined]


async def test_the_inbox_refuses_a_second_mark(clock: ManualClock) -> None:
    db = MemoryPaymentDatabase(clock)
    event_id = uuid4()
    async with db.unit_of_work() as uow:
        assert await uow.inbox.mark_processed(event_id, "StockReserved")
        assert not await uow.inbox.mark_processed(event_id, "StockReserved")
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert not await uow.inbox.mark_processed(event_id, "StockReserved")


async def test_payments_remember_cancellations_and_list_by_order(clock: ManualClock) -> None:
    db = MemoryPaymentDatabase(clock)
    order_id = uuid4()
    payment = Payment(
        uuid4(), order_id, Decimal("5"), "EUR", PaymentStatus.SUCCEEDED, None, clock.now()
    )
    async with db.unit_of_work() as uow:
        await uow.payments.add(payment)
        await uow.payments.mark_cancelled(order_id)
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert await uow.payments.was_cancelled(order_id)
        assert not await uow.payments.was_cancelled(uuid4())
        assert await uow.payments.get_by_order(order_id) == payment
        assert await uow.payments.list(uuid4()) == []


async def test_one_notification_per_order(clock: ManualClock) -> None:
    db = MemoryNotificationDatabase(clock)
    order_id = uuid4()

    def note() -> Notification:
        return Notification(
            uuid4(), order_id, NotificationType.ORDER_CONFIRMED, "x", "m", clock.now()
        )

    async with db.unit_of_work() as uow:
        assert await uow.notifications.add(note())
        assert not await uow.notifications.add(note())
        await uow.commit()
    async with db.unit_of_work() as uow:
        assert not await uow.notifications.add(note())
        assert len(await uow.notifications.list(order_id)) == 1


def test_the_manual_clock_refuses_naive_time(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="aware"):
        clock.set(clock.now().replace(tzinfo=None))

"""A consumer's batch in one transaction: all or nothing, and batches side by side never deadlock.

Each batch below holds orders whose locks, taken order by order, would cross those of the
batch running beside it; PostgreSQL's deadlock detector would then abort one of them with
an error. ``UnitOfWork.hold`` and the inventory's up-front product locks take everything a
batch needs in one global order first, so the batches only queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from adapters_postgres import raw
from adapters_postgres.uow import inventory_uow_factory, order_uow_factory, payment_uow_factory
from core_saga.handlers.exactly_once import Apply, apply_batch, apply_once
from core_saga.handlers.inventory import InventoryService
from core_saga.handlers.order import OrderLine, OrderService, PlaceOrder
from core_saga.inventory import SEED_PRODUCTS
from core_saga.messages import (
    Envelope,
    Event,
    OrderConfirmed,
    PaymentFailed,
    PaymentSucceeded,
    StockReleaseRequested,
    StockReserved,
)
from core_saga.ports import PaymentUnitOfWork
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock
from tests.integration.postgres.test_inventory_concurrency import envelope, order_created, stock

pytestmark = pytest.mark.integration

PRODUCTS = [product.id for product in SEED_PRODUCTS]


async def inbox_count(engine: AsyncEngine, event_ids: list[UUID]) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM processed_events WHERE event_id = ANY(:ids)"),
            {"ids": event_ids},
        )
    return int(count or 0)


line = OrderLine(product_id=PRODUCTS[0], quantity=1, unit_price=Decimal("2.50"))
amount = Decimal("2.50")


async def place(service: OrderService, count: int) -> list[UUID]:
    """``count`` orders of one ``line`` each; their ids."""
    placed = [
        await service.place_order(PlaceOrder(customer_id=uuid4(), items=(line,)), str(uuid4()))
        for _ in range(count)
    ]
    return [UUID(str(outcome.body["id"])) for outcome in placed]


def stock_reserved(order_id: UUID) -> Envelope:
    return envelope(
        StockReserved(order_id=order_id, items=(line,), total_amount=amount, currency="EUR")
    )


def payment_succeeded(order_id: UUID) -> Envelope:
    return envelope(PaymentSucceeded(order_id=order_id, payment_id=uuid4(), amount=amount))


@contextmanager
def statements_on(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement sent through ``engine`` inside the block, whitespace collapsed: those
    SQLAlchemy sends, and those sent on its driver connections (``adapters_postgres.raw``)."""
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(" ".join(statement.split()))

    @contextmanager
    def record_raw(statement: str) -> Iterator[None]:
        record(None, None, statement)
        yield

    sa_event.listen(engine.sync_engine, "before_cursor_execute", record)
    unwatch = raw.watch_statements(engine, record_raw)
    try:
        yield statements
    finally:
        unwatch()
        sa_event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_inventory_batches_over_products_in_opposite_orders_all_commit(
    inventory_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = InventoryService(uow=inventory_uow_factory(inventory_engine), clock=clock)
    before = await stock(inventory_engine)
    # One single-line order per product; every other batch walks the products backwards.
    orders = [
        [order_created([(product_id, 1)]) for product_id in products]
        for products in [PRODUCTS, PRODUCTS[::-1]] * 4
    ]
    batches = [[envelope(order) for order in batch] for batch in orders]

    await asyncio.gather(*(service.handle_batch(batch) for batch in batches))
    # Then the same orders again, each batch releasing half and confirming half.
    follow_ups = [
        [
            envelope(
                StockReleaseRequested(order_id=order.order_id, items=order.items)
                if i % 2
                else OrderConfirmed(order_id=order.order_id)
            )
            for i, order in enumerate(batch)
        ]
        for batch in orders
    ]
    await asyncio.gather(*(service.handle_batch(batch[::-1]) for batch in follow_ups))

    after = await stock(inventory_engine)
    for product_id in PRODUCTS:
        on_hand, reserved, sold = after[product_id]
        assert on_hand >= 0
        assert on_hand + reserved + sold == sum(before[product_id])
        assert reserved == before[product_id][1]  # every reservation was released or sold
    every = [e.event_id for batch in batches + follow_ups for e in batch]
    assert await inbox_count(inventory_engine, every) == len(every)


async def test_order_batches_from_two_topics_in_opposite_orders_all_commit(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    ids = await place(service, 12)
    reserved = [stock_reserved(i) for i in ids]
    paid = [payment_succeeded(i) for i in reversed(ids)]

    # As if from the inventory topic and the payment topic: the same orders, crosswise.
    await asyncio.gather(
        service.handle_batch(reserved[:6]),
        service.handle_batch(paid[:6]),
        service.handle_batch(reserved[6:]),
        service.handle_batch(paid[6:]),
    )

    async with order_engine.connect() as conn:
        statuses = await conn.scalars(
            text("SELECT status FROM orders WHERE id = ANY(:ids)"), {"ids": ids}
        )
        assert set(statuses) == {"CONFIRMED"}


async def test_a_failing_batch_keeps_nothing_and_its_events_apply_one_at_a_time(
    inventory_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = InventoryService(uow=inventory_uow_factory(inventory_engine), clock=clock)
    good = [envelope(order_created([(product_id, 1)])) for product_id in PRODUCTS[:2]]
    foreign = envelope(PaymentFailed(order_id=uuid4(), amount=Decimal(1), reason="declined"))
    before = await stock(inventory_engine)

    with pytest.raises(Exception, match="does not apply PaymentFailed"):
        await service.handle_batch([good[0], foreign, good[1]])

    assert await stock(inventory_engine) == before
    assert await inbox_count(inventory_engine, [e.event_id for e in good]) == 0
    for event in good:
        await service.handle(event)
    after = await stock(inventory_engine)
    assert [after[p][1] - before[p][1] for p in PRODUCTS[:2]] == [1, 1]


async def test_an_order_key_the_transaction_holds_is_not_locked_again(
    inventory_engine: AsyncEngine,
) -> None:
    held, other = uuid4(), uuid4()
    with statements_on(inventory_engine) as statements:
        async with inventory_uow_factory(inventory_engine)() as uow:
            await uow.hold({held})
            await uow.reservations.get(held, for_update=True)  # held: no second lock
            await uow.reservations.get(other, for_update=True)  # not held: locked here
            await uow.reservations.get(other, for_update=True)  # now held
            await uow.commit()
            await uow.reservations.get(held, for_update=True)  # a new transaction locks again
            await uow.rollback()
    assert sum("pg_advisory_xact_lock" in statement for statement in statements) == 3


async def test_an_order_batch_reads_its_orders_once_and_writes_them_once(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    ids = await place(service, 4)
    batch = [event for i in ids for event in (stock_reserved(i), payment_succeeded(i))]
    with statements_on(order_engine) as statements:
        await service.handle_batch(batch)

    # 8 events, 4 orders: one locked read, one (many-parameter) write, one outbox insert
    assert sum(s.startswith("SELECT orders.id") for s in statements) == 1
    assert sum("UPDATE orders" in s for s in statements) == 1
    assert sum("INSERT INTO outbox" in s for s in statements) == 1
    async with order_engine.connect() as conn:
        statuses = await conn.scalars(
            text("SELECT status FROM orders WHERE id = ANY(:ids)"), {"ids": ids}
        )
        assert sorted(statuses) == ["CONFIRMED"] * 4
        history = await conn.scalars(
            text(
                "SELECT string_agg(status, ',' ORDER BY seq) FROM order_status_history"
                " WHERE order_id = ANY(:ids) GROUP BY order_id"
            ),
            {"ids": ids},
        )
        assert set(history) == {"PENDING,STOCK_RESERVED,CONFIRMED"}
        confirmed = await conn.scalar(
            text(
                "SELECT count(*) FROM outbox WHERE event_type = 'OrderConfirmed'"
                " AND key = ANY(:keys)"
            ),
            {"keys": [str(i) for i in ids]},
        )
        assert confirmed == 4


async def test_one_event_in_a_batch_and_on_the_one_at_a_time_path_queue_without_deadlock(
    payment_engine: AsyncEngine, clock: ManualClock
) -> None:
    """After a rebalance one replica may apply an event in a batch while another applies it
    alone (its batch had failed). The batch holds the order, then inserts the inbox row; the
    lone path inserted its inbox row first and then waited for the order: each waited for
    the other, and PostgreSQL aborted one as a deadlock."""
    event = envelope(PaymentSucceeded(order_id=uuid4(), payment_id=uuid4(), amount=Decimal("1")))
    factory = payment_uow_factory(payment_engine)
    applied: list[str] = []
    held = asyncio.Event()

    def recording(path: str) -> Apply[PaymentUnitOfWork]:
        async def apply(tx: PaymentUnitOfWork, envelope: Envelope) -> list[Event]:
            await tx.hold({envelope.payload.order_id})  # what a handler's own locking does
            applied.append(path)
            return []

        return apply

    async def pause_holding(tx: PaymentUnitOfWork, envelopes: Sequence[Envelope]) -> None:
        held.set()
        await asyncio.sleep(0.5)  # the lone path gets as far as it can meanwhile

    async def alone() -> bool:
        await held.wait()
        return await apply_once(factory, clock, event, recording("alone"))

    batch = apply_batch(factory, clock, [event], recording("batch"), prepare=pause_holding)
    batched, single = await asyncio.gather(batch, alone())
    assert ([e.event_id for e in batched], single) == ([event.event_id], False)
    assert applied == ["batch"]

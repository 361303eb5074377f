"""Inventory and payment batches read each table once and write each table once, at commit.

Their repositories keep what a transaction read under its locks and what it changed, and
write the changes when the unit of work commits. These tests count the statements and then
check that the rows are what applying the events one at a time would leave, including an
order added and changed within the same batch, and a batch that fails (nothing written).
"""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from adapters_postgres.uow import inventory_uow_factory, payment_uow_factory
from core_saga.handlers.inventory import InventoryService
from core_saga.handlers.payment import PaymentService, SimulatedGateway
from core_saga.messages import (
    OrderCancelled,
    OrderConfirmed,
    PaymentFailed,
    StockReleaseRequested,
    StockReserved,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock
from tests.integration.postgres.test_batches import PRODUCTS, statements_on
from tests.integration.postgres.test_inventory_concurrency import (
    envelope,
    order_created,
    outbox_types,
    stock,
)

pytestmark = pytest.mark.integration


def count(statements: list[str], start: str) -> int:
    return sum(statement.startswith(start) for statement in statements)


async def rows(engine: AsyncEngine, sql: str, ids: list[UUID]) -> dict[UUID, str]:
    async with engine.connect() as conn:
        return {key: value for key, value in await conn.execute(text(sql), {"ids": ids})}


async def test_an_inventory_batch_reads_and_writes_each_table_once(
    inventory_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = InventoryService(uow=inventory_uow_factory(inventory_engine), clock=clock)
    created = [order_created([(PRODUCTS[i % 2], 1), (PRODUCTS[2], 2)]) for i in range(6)]
    before = await stock(inventory_engine)
    # Each order reserved, then in the same batch released (odd) or sold (even).
    follow_ups = [
        envelope(
            StockReleaseRequested(order_id=order.order_id, items=order.items)
            if i % 2
            else OrderConfirmed(order_id=order.order_id)
        )
        for i, order in enumerate(created)
    ]
    with statements_on(inventory_engine) as statements:
        await service.handle_batch([envelope(order) for order in created] + follow_ups)

    assert count(statements, "SELECT reservations.order_id") == 1
    assert count(statements, "SELECT products.id") == 1
    assert count(statements, "WITH new_reservation AS (INSERT INTO reservations") == 1
    assert count(statements, "UPDATE reservations") == 0  # added in this batch: inserted as is
    assert count(statements, "UPDATE products") == 1
    ids = [order.order_id for order in created]
    statuses = await rows(
        inventory_engine,
        "SELECT order_id, status FROM reservations WHERE order_id = ANY(:ids)",
        ids,
    )
    assert statuses == {o: "RELEASED" if i % 2 else "SOLD" for i, o in enumerate(ids)}
    after = await stock(inventory_engine)
    assert after[PRODUCTS[2]] == (before[PRODUCTS[2]][0] - 6, before[PRODUCTS[2]][1], 6)
    assert after[PRODUCTS[0]] == (before[PRODUCTS[0]][0] - 3, before[PRODUCTS[0]][1], 3)
    assert after[PRODUCTS[1]] == before[PRODUCTS[1]]  # its orders were all released
    types = await outbox_types(inventory_engine, [str(i) for i in ids])
    assert types == {"StockReserved": 6, "StockReleased": 3}

    # Reservations committed earlier and released later: one update for all of them.
    held = [order_created([(PRODUCTS[0], 1)]) for _ in range(3)]
    await service.handle_batch([envelope(order) for order in held])
    releases = [StockReleaseRequested(order_id=o.order_id, items=o.items) for o in held]
    with statements_on(inventory_engine) as statements:
        await service.handle_batch([envelope(release) for release in releases])
    assert count(statements, "UPDATE reservations") == 1
    assert count(statements, "UPDATE products") == 1
    assert count(statements, "WITH new_reservation AS") == 0
    assert (await stock(inventory_engine))[PRODUCTS[0]] == after[PRODUCTS[0]]


async def test_a_failed_inventory_batch_writes_nothing_and_its_retry_reads_afresh(
    inventory_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = InventoryService(uow=inventory_uow_factory(inventory_engine), clock=clock)
    order = order_created([(PRODUCTS[0], 1)])
    foreign = envelope(PaymentFailed(order_id=uuid4(), amount=Decimal(1), reason="declined"))
    before = await stock(inventory_engine)

    with pytest.raises(Exception, match="does not apply PaymentFailed"):
        await service.handle_batch([envelope(order), foreign])

    assert await stock(inventory_engine) == before
    await service.handle_batch([envelope(order)])
    after = await stock(inventory_engine)
    assert after[PRODUCTS[0]][1] == before[PRODUCTS[0]][1] + 1


def stock_reserved(order_id: UUID) -> StockReserved:
    return StockReserved(order_id=order_id, items=(), total_amount=Decimal(5), currency="EUR")


async def test_a_payment_batch_reads_its_orders_once_and_writes_at_commit(
    payment_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = PaymentService(
        uow=payment_uow_factory(payment_engine), clock=clock, gateway=SimulatedGateway(1.0)
    )
    ids = [uuid4() for _ in range(6)]
    early = ids[:2]  # cancelled before their stock was reserved: never charged
    late = ids[2:4]  # charged, then cancelled in the same batch: refunded
    batch = [envelope(OrderCancelled(order_id=i, reason="timeout")) for i in early]
    batch += [envelope(stock_reserved(i)) for i in ids]
    batch += [envelope(OrderCancelled(order_id=i, reason="timeout")) for i in late]

    with statements_on(payment_engine) as statements:
        await service.handle_batch(batch)

    # Three transactions, each reading its orders once and writing each table once: the
    # batch (the charges PENDING, the cancellations), the charges' outcomes (the late two
    # REFUNDING: their cancellation came while they were PENDING), the late two's refunds.
    assert count(statements, "SELECT pg_advisory_xact_lock") == 3
    assert count(statements, "SELECT wanted.order_id") == 3
    assert count(statements, "INSERT INTO payments") == 1
    assert count(statements, "UPDATE payments") == 2
    assert count(statements, "INSERT INTO cancelled_orders") == 1
    assert count(statements, "INSERT INTO outbox") == 2
    payments = await rows(
        payment_engine, "SELECT order_id, status FROM payments WHERE order_id = ANY(:ids)", ids
    )
    assert payments == {i: "REFUNDED" if i in late else "SUCCEEDED" for i in ids[2:]}
    cancelled = await rows(
        payment_engine,
        "SELECT order_id, 'yes' FROM cancelled_orders WHERE order_id = ANY(:ids)",
        ids,
    )
    assert set(cancelled) == set(early + late)
    types = await outbox_types(payment_engine, [str(i) for i in ids])
    assert types == {"PaymentSucceeded": 4, "PaymentRefunded": 2}

    # A later batch: the committed cancellations and payments are read back from the tables.
    later = [envelope(stock_reserved(i)) for i in early]
    later += [envelope(OrderCancelled(order_id=i, reason="timeout")) for i in ids[4:]]
    with statements_on(payment_engine) as statements:
        await service.handle_batch(later)
    assert count(statements, "INSERT INTO payments") == 0
    assert count(statements, "UPDATE payments") == 2  # REFUNDING, then REFUNDED
    payments = await rows(
        payment_engine, "SELECT order_id, status FROM payments WHERE order_id = ANY(:ids)", ids
    )
    assert payments == dict.fromkeys(ids[2:], "REFUNDED")  # and still none for the early two


async def test_one_payment_event_costs_a_lock_a_read_and_a_write_per_step(
    payment_engine: AsyncEngine, clock: ManualClock
) -> None:
    """The charge PENDING, then its outcome: each step one lock, one read, one write."""
    service = PaymentService(
        uow=payment_uow_factory(payment_engine), clock=clock, gateway=SimulatedGateway(1.0)
    )
    order_id = uuid4()
    with statements_on(payment_engine) as statements:
        await service.handle(envelope(stock_reserved(order_id)))
    assert count(statements, "SELECT pg_advisory_xact_lock") == 2
    assert count(statements, "SELECT wanted.order_id") == 2
    assert count(statements, "INSERT INTO payments") == 1
    assert count(statements, "UPDATE payments") == 1
    assert count(statements, "SELECT EXISTS") == 0

"""Reservations under concurrency: never oversold, never negative, never deadlocked."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from adapters_postgres.uow import inventory_uow_factory
from core_saga.handlers.inventory import InventoryService
from core_saga.inventory import SEED_PRODUCTS
from core_saga.messages import Envelope, Event, LineItem, OrderCreated, StockReleaseRequested
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock

pytestmark = pytest.mark.integration

MONITOR = UUID("44444444-4444-4444-4444-444444444444")  # seeded with 30
INITIAL = {product.id: product.stock for product in SEED_PRODUCTS}


def envelope(event: Event) -> Envelope:
    return Envelope(
        event_id=uuid4(),
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        correlation_id=event.order_id,
        payload=event,
    )


def order_created(lines: list[tuple[UUID, int]]) -> OrderCreated:
    items = tuple(
        LineItem(product_id=product_id, quantity=quantity, unit_price=Decimal("1.00"))
        for product_id, quantity in lines
    )
    return OrderCreated(
        order_id=uuid4(),
        customer_id=uuid4(),
        items=items,
        total_amount=sum((i.unit_price * i.quantity for i in items), Decimal(0)),
        currency="EUR",
    )


async def stock(engine: AsyncEngine) -> dict[UUID, tuple[int, int, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT id, stock, reserved, sold FROM products"))
        return {row.id: (row.stock, row.reserved, row.sold) for row in rows}


async def outbox_types(engine: AsyncEngine, keys: list[str]) -> Counter[str]:
    async with engine.connect() as conn:
        rows = await conn.scalars(
            text("SELECT event_type FROM outbox WHERE key = ANY(:keys)"), {"keys": keys}
        )
        return Counter(rows)


async def test_sixty_one_unit_orders_on_thirty_units_reserve_exactly_thirty(
    inventory_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = InventoryService(uow=inventory_uow_factory(inventory_engine), clock=clock)
    orders = [order_created([(MONITOR, 1)]) for _ in range(60)]

    await asyncio.gather(*(service.handle(envelope(order)) for order in orders))

    assert (await stock(inventory_engine))[MONITOR] == (0, 30, 0)
    keys = [str(order.order_id) for order in orders]
    assert await outbox_types(inventory_engine, keys) == {"StockReserved": 30, "StockRejected": 30}


async def test_multi_line_orders_in_random_line_order_never_deadlock(
    inventory_engine: AsyncEngine, clock: ManualClock
) -> None:
    """Orders over the same products, lines shuffled, reserving and releasing side by side.

    A deadlock would surface as an error from PostgreSQL's deadlock detector; locking in
    ascending id order means none occurs, and every unit is accounted for afterwards.
    """
    service = InventoryService(uow=inventory_uow_factory(inventory_engine), clock=clock)
    rng = random.Random(7)
    products = [p.id for p in SEED_PRODUCTS if p.id != MONITOR]
    orders = []
    for _ in range(30):
        lines = [(product_id, rng.randint(1, 2)) for product_id in products]
        rng.shuffle(lines)
        orders.append(order_created(lines))
    before = await stock(inventory_engine)

    await asyncio.gather(*(service.handle(envelope(order)) for order in orders))
    releases = [StockReleaseRequested(order_id=o.order_id, items=o.items) for o in orders[::2]]
    await asyncio.gather(
        *(service.handle(envelope(release)) for release in releases),
        *(service.handle(envelope(order_created(_shuffled(rng, products)))) for _ in range(20)),
    )

    after = await stock(inventory_engine)
    for product_id in products:
        on_hand, reserved, sold = after[product_id]
        assert on_hand >= 0
        assert on_hand + reserved + sold == sum(before[product_id])
    async with inventory_engine.connect() as conn:
        held = await conn.execute(
            text(
                "SELECT l.product_id, sum(l.quantity) AS quantity FROM reservation_lines l"
                " JOIN reservations r USING (order_id) WHERE r.status = 'RESERVED'"
                " GROUP BY l.product_id"
            )
        )
        held_by_product = {row.product_id: row.quantity for row in held}
    for product_id in products:
        assert after[product_id][1] == held_by_product.get(product_id, 0)


def _shuffled(rng: random.Random, products: list[UUID]) -> list[tuple[UUID, int]]:
    lines = [(product_id, 1) for product_id in products]
    rng.shuffle(lines)
    return lines

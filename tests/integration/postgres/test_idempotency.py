"""API idempotency on Postgres: racing requests with one key create one order."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from adapters_postgres.uow import order_uow_factory
from core_saga.handlers.order import OrderLine, OrderService, PlaceOrder
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock

pytestmark = pytest.mark.integration


def a_request() -> PlaceOrder:
    return PlaceOrder(
        customer_id=uuid4(),
        items=(
            OrderLine(product_id=uuid4(), quantity=2, unit_price=Decimal("19.99")),
            OrderLine(product_id=uuid4(), quantity=1, unit_price=Decimal("5")),
        ),
    )


async def orders_of(engine: AsyncEngine, customer_id: object) -> list[object]:
    async with engine.connect() as conn:
        return list(
            await conn.scalars(
                text("SELECT id FROM orders WHERE customer_id = :c"), {"c": customer_id}
            )
        )


async def outbox_rows_for(engine: AsyncEngine, order_id: object) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM outbox WHERE key = :k"), {"k": str(order_id)}
        )
    return int(count or 0)


async def test_fifty_concurrent_creates_with_one_key_make_one_order(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    request, key = a_request(), f"key-{uuid4()}"

    outcomes = await asyncio.gather(*(service.place_order(request, key) for _ in range(50)))

    assert Counter(outcome.status_code for outcome in outcomes) == {201: 1, 200: 49}
    [created] = [outcome for outcome in outcomes if outcome.status_code == 201]
    assert all(outcome.body == created.body for outcome in outcomes)
    assert all(list(o.body) == list(created.body) for o in outcomes)  # same key order too
    [order_id] = await orders_of(order_engine, request.customer_id)
    assert str(order_id) == created.body["id"]
    assert await outbox_rows_for(order_engine, order_id) == 1


async def test_same_key_with_another_request_is_a_conflict(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    key = f"key-{uuid4()}"
    first = await service.place_order(a_request(), key)
    other = a_request()
    second = await service.place_order(other, key)
    assert (first.status_code, second.status_code) == (201, 409)
    assert await orders_of(order_engine, other.customer_id) == []


async def test_an_expired_key_counts_as_absent(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    request, key = a_request(), f"key-{uuid4()}"
    first = await service.place_order(request, key)
    clock.advance(service.key_ttl.total_seconds() + 1)
    again = await service.place_order(request, key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.body["id"] != again.body["id"]
    assert len(await orders_of(order_engine, request.customer_id)) == 2


async def test_a_rolled_back_claim_leaves_the_key_free(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    key = f"key-{uuid4()}"
    async with order_uow_factory(order_engine)() as uow:
        later = clock.now() + timedelta(hours=1)
        assert await uow.idempotency.claim(key, "hash", clock.now(), later) is None
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    outcome = await service.place_order(a_request(), key)
    assert outcome.status_code == 201

"""OrderUnitOfWork.place: the key's claim, the order and its OrderCreated, all or nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from typing import Any

from core_saga.handlers.order import order_view
from core_saga.memory import ManualClock
from core_saga.orders import Order
from core_saga.ports import KeyClaim, OrderUnitOfWork, StoredResponse

from tests.contract.builders import new_order, order_created
from tests.contract.conftest import Database
from tests.contract.test_idempotency import TTL, key_held


async def place(
    orders: Database[OrderUnitOfWork], clock: ManualClock, key: str, request_hash: str
) -> tuple[Order, StoredResponse | None]:
    """Place a new order under ``key``; its response is its view."""
    order = new_order(clock.now())
    now = clock.now()
    claim = KeyClaim(key, request_hash, now, now + TTL, (201, order_view(order)))
    async with orders.unit_of_work() as uow:
        stored = await uow.place(order, order_created(now, order.id), claim)
    return order, stored


async def stored_order(orders: Database[OrderUnitOfWork], order: Order) -> Order | None:
    async with orders.unit_of_work() as uow:
        return await uow.orders.get(order.id)


async def events(orders: Database[OrderUnitOfWork]) -> list[str]:
    return [pending.message.key for pending in await orders.outbox.claim_batch(100)]


async def test_a_placed_order_its_event_and_its_response_are_stored(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    order, stored = await place(orders, clock, "key-1", "hash-a")

    assert stored is None
    assert await stored_order(orders, order) == order
    assert await events(orders) == [str(order.id)]
    async with orders.unit_of_work() as uow:
        now = clock.now()
        assert await uow.idempotency.claim("key-1", "hash-b", now, now + TTL) == StoredResponse(
            "hash-a", 201, order_view(order)
        )


async def test_a_live_key_answers_its_stored_response_and_nothing_is_written(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    first, _ = await place(orders, clock, "key-1", "hash-a")
    clock.advance(TTL - timedelta(seconds=1))

    second, stored = await place(orders, clock, "key-1", "hash-b")

    assert stored == StoredResponse("hash-a", 201, order_view(first))
    assert await stored_order(orders, second) is None
    assert await events(orders) == [str(first.id)]


async def test_an_expired_key_is_taken_over(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    first, _ = await place(orders, clock, "key-1", "hash-a")
    clock.advance(TTL)

    second, stored = await place(orders, clock, "key-1", "hash-b")

    assert stored is None
    assert await stored_order(orders, second) == second
    assert await events(orders) == [str(first.id), str(second.id)]


async def test_a_place_racing_a_claim_waits_and_then_answers_its_response(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    body: dict[str, Any] = {"id": "order-1"}
    contender = partial(place, orders, clock, "key-1", "hash-a")
    async with key_held(orders, clock, contender) as (first, second):
        await first.idempotency.save_response("key-1", 201, body)
        await first.commit()

    order, stored = await asyncio.wait_for(second, 10)
    assert stored == StoredResponse("hash-a", 201, body)
    assert await stored_order(orders, order) is None
    assert await events(orders) == []


async def test_a_place_racing_a_claim_that_rolls_back_places_the_order(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    contender = partial(place, orders, clock, "key-1", "hash-b")
    async with key_held(orders, clock, contender) as (_, second):
        pass  # the block ends without a commit

    order, stored = await asyncio.wait_for(second, 10)
    assert stored is None
    assert await stored_order(orders, order) == order

"""IdempotencyStore: the first claim of a key wins; later ones read its stored response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from core_saga.handlers.order import order_view
from core_saga.memory import ManualClock
from core_saga.ports import OrderUnitOfWork, StoredResponse

from tests.contract.builders import assert_waiting, new_order
from tests.contract.conftest import Database

TTL = timedelta(hours=24)
T = TypeVar("T")


async def claim(
    orders: Database[OrderUnitOfWork], clock: ManualClock, key: str, request_hash: str
) -> StoredResponse | None:
    """Claim in a transaction of its own; a won claim stores a 201 with ``{"hash": …}``."""
    async with orders.unit_of_work() as uow:
        now = clock.now()
        stored = await uow.idempotency.claim(key, request_hash, now, now + TTL)
        if stored is None:
            await uow.idempotency.save_response(key, 201, {"hash": request_hash})
            await uow.commit()
    return stored


async def test_the_first_claim_wins_and_later_ones_get_the_stored_response(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    body: dict[str, Any] = order_view(new_order(clock.now()))
    async with orders.unit_of_work() as uow:
        now = clock.now()
        assert await uow.idempotency.claim("key-1", "hash-a", now, now + TTL) is None
        await uow.idempotency.save_response("key-1", 201, body)
        await uow.commit()

    clock.advance(timedelta(minutes=5))
    assert await claim(orders, clock, "key-1", "hash-a") == StoredResponse("hash-a", 201, body)
    assert await claim(orders, clock, "key-1", "hash-b") == StoredResponse("hash-a", 201, body)
    assert await claim(orders, clock, "key-2", "hash-a") is None


async def test_a_rolled_back_claim_leaves_the_key_free(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    async with orders.unit_of_work() as uow:
        now = clock.now()
        assert await uow.idempotency.claim("key-1", "hash-a", now, now + TTL) is None
        await uow.idempotency.save_response("key-1", 201, {"hash": "hash-a"})

    assert await claim(orders, clock, "key-1", "hash-b") is None
    assert await claim(orders, clock, "key-1", "hash-a") == StoredResponse(
        "hash-b", 201, {"hash": "hash-b"}
    )


async def test_an_expired_key_counts_as_absent(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    assert await claim(orders, clock, "key-1", "hash-a") is None
    clock.advance(TTL - timedelta(seconds=1))
    assert await claim(orders, clock, "key-1", "hash-b") == StoredResponse(
        "hash-a", 201, {"hash": "hash-a"}
    )

    clock.advance(timedelta(seconds=1))  # now == expires_at: expired
    assert await claim(orders, clock, "key-1", "hash-b") is None
    assert await claim(orders, clock, "key-1", "hash-c") == StoredResponse(
        "hash-b", 201, {"hash": "hash-b"}
    )


async def test_a_claim_can_store_its_response_at_once(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    async def claim_with_response(request_hash: str, body: dict[str, str]) -> None:
        async with orders.unit_of_work() as uow:
            now = clock.now()
            stored = await uow.idempotency.claim("key-1", request_hash, now, now + TTL, (201, body))
            assert stored is None
            await uow.commit()
        assert await claim(orders, clock, "key-1", request_hash) == StoredResponse(
            request_hash, 201, body
        )

    await claim_with_response("hash-a", {"id": "order-1"})
    clock.advance(TTL)  # an expired key taken over with a response keeps the new one
    await claim_with_response("hash-b", {"id": "order-2"})


@asynccontextmanager
async def key_held(
    orders: Database[OrderUnitOfWork],
    clock: ManualClock,
    contender: Callable[[], Coroutine[Any, Any, T]],
) -> AsyncIterator[tuple[OrderUnitOfWork, asyncio.Task[T]]]:
    """A transaction that claimed "key-1" for "hash-a", and ``contender`` waiting on it."""
    async with orders.unit_of_work() as first:
        now = clock.now()
        assert await first.idempotency.claim("key-1", "hash-a", now, now + TTL) is None
        second = asyncio.create_task(contender())
        await assert_waiting(second)
        yield first, second


async def test_a_concurrent_claim_waits_and_then_reads_the_stored_response(
    orders: Database[OrderUnitOfWork], clock: ManualClock
) -> None:
    contender = partial(claim, orders, clock, "key-1", "hash-a")
    async with key_held(orders, clock, contender) as (first, second):
        await first.idempotency.save_response("key-1", 201, {"id": "order-1"})
        await first.commit()
    assert await asyncio.wait_for(second, 10) == StoredResponse("hash-a", 201, {"id": "order-1"})

"""API idempotency on Postgres: racing requests with one key create one order."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from adapters_postgres import placing
from adapters_postgres.idempotency import CLAIM_TRIES, KeyRaceError, PostgresIdempotencyStore
from adapters_postgres.uow import order_uow_factory
from core_saga.handlers.order import OrderLine, OrderService, PlaceOrder
from core_saga.messages import Envelope
from core_saga.ports import KeyClaim, StoredResponse
from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.contract.builders import new_order, order_created
from tests.integration.postgres.conftest import ManualClock

pytestmark = pytest.mark.integration
DELETE_KEY = text("DELETE FROM idempotency_keys WHERE key = :k")


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
    committed: list[Envelope] = []  # what the business counters count
    service = OrderService(
        uow=order_uow_factory(order_engine, on_commit=committed.extend), clock=clock
    )
    request, key = a_request(), f"key-{uuid4()}"

    outcomes = await asyncio.gather(*(service.place_order(request, key) for _ in range(50)))

    assert Counter(outcome.status_code for outcome in outcomes) == {201: 1, 200: 49}
    [created] = [outcome for outcome in outcomes if outcome.status_code == 201]
    assert all(outcome.body == created.body for outcome in outcomes)
    assert all(list(o.body) == list(created.body) for o in outcomes)  # same key order too
    [order_id] = await orders_of(order_engine, request.customer_id)
    assert str(order_id) == created.body["id"]
    assert await outbox_rows_for(order_engine, order_id) == 1
    assert [(e.event_type, str(e.key)) for e in committed] == [("OrderCreated", str(order_id))]


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


async def test_a_post_is_one_statement_without_begin_or_commit(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    """Every statement the driver sent, BEGIN and COMMIT included, as asyncpg logs them."""
    sent: list[str] = []
    connections: list[Any] = []

    def log(record: Any) -> None:
        sent.append(" ".join(record.query.split()))

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        connections.append(record.driver_connection)
        record.driver_connection.add_query_logger(log)

    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    sa_event.listen(order_engine.sync_engine, "checkout", checkout)
    try:
        await service.place_order(a_request(), f"key-{uuid4()}")
        await asyncio.sleep(0.1)  # asyncpg calls its query loggers soon, not at once
    finally:
        sa_event.remove(order_engine.sync_engine, "checkout", checkout)
        for connection in connections:
            connection.remove_query_logger(log)

    # The relay's wake-up follows on another connection, outside any transaction
    # (``adapters_postgres.wakeup``): no relay leads in this process.
    posted = [each for each in sent if each != "SELECT pg_notify($1, '')"]
    assert len(posted) == 1, sent
    assert posted[0].startswith("WITH claimed AS (INSERT INTO idempotency_keys")
    assert "pg_notify" not in posted[0]


async def test_place_refuses_a_unit_of_work_whose_transaction_began(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    """Its statement would commit apart from what the transaction did before."""
    now = clock.now()
    order = new_order(now)
    claim = KeyClaim(f"key-{uuid4()}", "hash", now, now + timedelta(days=1))
    async with order_uow_factory(order_engine)() as uow:
        assert await uow.orders.get(order.id) is None  # something ran in this transaction
        with pytest.raises(RuntimeError, match="this one has begun"):
            await uow.place(order, order_created(now, order.id), claim)
    assert await orders_of(order_engine, order.customer_id) == []


def purge_before_reading(
    monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine, times: int = 1
) -> list[str]:
    """The housekeeping purge deleting the key between a claim that lost and the read of
    what it holds, ``times`` times (the millisecond window at a key's expiry)."""
    real = PostgresIdempotencyStore.stored
    purged: list[str] = []

    async def stored(self: PostgresIdempotencyStore, key: str) -> StoredResponse | None:
        if len(purged) < times:
            purge = create_async_engine(engine.url, poolclass=NullPool)  # the pool is in use
            try:
                async with purge.begin() as conn:
                    await conn.execute(DELETE_KEY, {"k": key})
            finally:
                await purge.dispose()
            purged.append(key)
        return await real(self, key)

    monkeypatch.setattr(PostgresIdempotencyStore, "stored", stored)
    return purged


async def test_a_key_purged_after_its_claim_lost_places_the_order(
    order_engine: AsyncEngine, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the read found no row and the POST answered 500."""
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    request, key = a_request(), f"key-{uuid4()}"
    first = await service.place_order(request, key)
    purged = purge_before_reading(monkeypatch, order_engine)

    again = await service.place_order(request, key)

    assert purged == [key]
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.body["id"] != again.body["id"]
    assert len(await orders_of(order_engine, request.customer_id)) == 2
    assert await outbox_rows_for(order_engine, again.body["id"]) == 1


async def test_a_key_purged_at_every_read_is_a_clear_error(
    order_engine: AsyncEngine, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never a loop: after ``CLAIM_TRIES`` the race is an error naming the key."""
    service = OrderService(uow=order_uow_factory(order_engine), clock=clock)
    request, key = a_request(), f"key-{uuid4()}"
    await service.place_order(request, key)

    async def place_losing(conn: Any, params: dict[str, Any]) -> bool:
        return False  # another request took the key each time, and the purge its row

    monkeypatch.setattr(placing, "place", place_losing)
    purge_before_reading(monkeypatch, order_engine, times=CLAIM_TRIES)
    with pytest.raises(KeyRaceError, match=key):
        await service.place_order(request, key)

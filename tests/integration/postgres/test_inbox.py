"""The inbox: a duplicate event id in two concurrent transactions is applied once."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
from adapters_postgres.uow import payment_uow_factory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import wait_for_lock_waiters

pytestmark = pytest.mark.integration


async def test_a_redelivered_event_is_a_duplicate(payment_engine: AsyncEngine) -> None:
    event_id = uuid4()
    async with payment_uow_factory(payment_engine)() as uow:
        assert await uow.inbox.mark_processed(event_id, "StockReserved")
        await uow.commit()
    async with payment_uow_factory(payment_engine)() as uow:
        assert not await uow.inbox.mark_processed(event_id, "StockReserved")


async def test_a_rolled_back_event_is_not_remembered(payment_engine: AsyncEngine) -> None:
    event_id = uuid4()
    async with payment_uow_factory(payment_engine)() as uow:
        assert await uow.inbox.mark_processed(event_id, "StockReserved")
    async with payment_uow_factory(payment_engine)() as uow:
        assert await uow.inbox.mark_processed(event_id, "StockReserved")


async def test_concurrent_duplicates_apply_once(payment_engine: AsyncEngine) -> None:
    """Both transactions run side by side; the second waits on the first's inbox row."""
    event_id, order_id = uuid4(), uuid4()
    first_inserted = asyncio.Event()
    release_first = asyncio.Event()

    async def deliver(first: bool) -> bool:
        async with payment_uow_factory(payment_engine)() as uow:
            if not first:
                await first_inserted.wait()
            if not await uow.inbox.mark_processed(event_id, "OrderCancelled"):
                return False
            if first:
                first_inserted.set()
                await release_first.wait()
            await uow.payments.mark_cancelled(order_id)  # the business effect
            await uow.commit()
            return True

    first = asyncio.create_task(deliver(first=True))
    second = asyncio.create_task(deliver(first=False))
    await first_inserted.wait()
    # The second is now blocked inside INSERT … ON CONFLICT on the first's row.
    await wait_for_lock_waiters(payment_engine, 1)
    release_first.set()
    assert sorted(await asyncio.gather(first, second)) == [False, True]
    async with payment_engine.connect() as conn:
        rows = await conn.scalar(
            text("SELECT count(*) FROM processed_events WHERE event_id = :id"), {"id": event_id}
        )
    assert rows == 1

"""Inbox.mark_processed: an event id counts once, and only once its transaction committed."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

from core_saga.ports import UnitOfWork

from tests.contract.builders import assert_waiting
from tests.contract.conftest import Database


async def mark(database: Database[UnitOfWork], event_id: UUID, *, commit: bool = True) -> bool:
    async with database.unit_of_work() as uow:
        first = await uow.inbox.mark_processed(event_id, "StockReserved")
        if commit:
            await uow.commit()
    return first


async def test_the_first_mark_is_true_a_duplicate_false(database: Database[UnitOfWork]) -> None:
    event_id = uuid4()
    async with database.unit_of_work() as uow:
        assert await uow.inbox.mark_processed(event_id, "StockReserved")
        assert not await uow.inbox.mark_processed(event_id, "StockReserved")
        assert await uow.inbox.mark_processed(uuid4(), "StockReserved")
        await uow.commit()
    assert not await mark(database, event_id)


async def test_a_rolled_back_mark_does_not_count(database: Database[UnitOfWork]) -> None:
    event_id = uuid4()
    assert await mark(database, event_id, commit=False)
    assert await mark(database, event_id)
    assert not await mark(database, event_id)


async def test_a_concurrent_duplicate_waits_and_is_refused_when_the_first_commits(
    database: Database[UnitOfWork],
) -> None:
    event_id = uuid4()
    async with database.unit_of_work() as first:
        assert await first.inbox.mark_processed(event_id, "StockReserved")
        second = asyncio.create_task(mark(database, event_id))
        await assert_waiting(second)
        await first.commit()
    assert not await asyncio.wait_for(second, 10)


async def test_a_concurrent_duplicate_goes_ahead_when_the_first_rolls_back(
    database: Database[UnitOfWork],
) -> None:
    event_id = uuid4()
    async with database.unit_of_work() as first:
        assert await first.inbox.mark_processed(event_id, "StockReserved")
        second = asyncio.create_task(mark(database, event_id))
        await assert_waiting(second)
    assert await asyncio.wait_for(second, 10)
    assert not await mark(database, event_id)


async def test_marking_all_returns_the_new_ids_once_each(database: Database[UnitOfWork]) -> None:
    seen, new_a, new_b = uuid4(), uuid4(), uuid4()
    assert await mark(database, seen)
    async with database.unit_of_work() as uow:
        events = [(new_a, "StockReserved"), (seen, "StockReserved"), (new_b, "PaymentFailed")]
        assert await uow.inbox.mark_all([*events, (new_a, "StockReserved")]) == {new_a, new_b}
        assert await uow.inbox.mark_all(events) == set()  # marked in this transaction
        await uow.commit()
    assert not await mark(database, new_a)
    assert not await mark(database, new_b)


async def test_marking_all_waits_for_a_concurrent_mark_of_one_of_them(
    database: Database[UnitOfWork],
) -> None:
    taken, free = uuid4(), uuid4()

    async def mark_both() -> set[UUID]:
        async with database.unit_of_work() as uow:
            fresh = await uow.inbox.mark_all([(free, "StockReserved"), (taken, "StockReserved")])
            await uow.commit()
        return fresh

    async with database.unit_of_work() as first:
        assert await first.inbox.mark_processed(taken, "StockReserved")
        second = asyncio.create_task(mark_both())
        await assert_waiting(second)
        await first.commit()
    assert await asyncio.wait_for(second, 10) == {free}

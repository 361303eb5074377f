"""UnitOfWork: business, inbox and outbox rows appear together at commit, or not at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest
from core_saga.memory import ManualClock

from tests.contract.builders import (
    new_notification,
    new_order,
    new_payment,
    new_reservation,
    order_created,
)
from tests.contract.conftest import Database


@dataclass(frozen=True)
class BusinessRow:
    """How to write one row of a service's own tables, and to find it again by its key."""

    write: Callable[[Any, ManualClock], Awaitable[UUID]]
    exists: Callable[[Any, UUID], Awaitable[bool]]


async def _write_order(uow: Any, clock: ManualClock) -> UUID:
    order = new_order(clock.now())
    await uow.orders.add(order)
    return order.id


async def _write_reservation(uow: Any, clock: ManualClock) -> UUID:
    reservation = new_reservation()
    await uow.reservations.add(reservation)
    return reservation.order_id


async def _write_payment(uow: Any, clock: ManualClock) -> UUID:
    payment = new_payment(clock.now())
    await uow.payments.add(payment)
    return payment.order_id


async def _write_notification(uow: Any, clock: ManualClock) -> UUID:
    notification = new_notification(clock.now())
    assert await uow.notifications.add(notification)
    return notification.order_id


async def _order_exists(uow: Any, key: UUID) -> bool:
    return await uow.orders.get(key) is not None


async def _reservation_exists(uow: Any, key: UUID) -> bool:
    return await uow.reservations.get(key) is not None


async def _payment_exists(uow: Any, key: UUID) -> bool:
    return await uow.payments.get_by_order(key) is not None


async def _notification_exists(uow: Any, key: UUID) -> bool:
    return bool(await uow.notifications.list(key))


BUSINESS_ROWS = {
    "order": BusinessRow(_write_order, _order_exists),
    "inventory": BusinessRow(_write_reservation, _reservation_exists),
    "payment": BusinessRow(_write_payment, _payment_exists),
    "notification": BusinessRow(_write_notification, _notification_exists),
}


@dataclass(frozen=True)
class Written:
    key: UUID
    event_id: UUID


async def write_all(uow: Any, row: BusinessRow, clock: ManualClock) -> Written:
    """One business row, one inbox row and one outbox row, in ``uow``'s transaction."""
    event_id = uuid4()
    assert await uow.inbox.mark_processed(event_id, "StockReserved")
    key = await row.write(uow, clock)
    await uow.outbox.add(order_created(clock.now()))
    return Written(key, event_id)


async def assert_nothing_stayed(
    database: Database[Any], row: BusinessRow, written: Written, *, outbox_rows: int = 0
) -> None:
    """Neither the business row nor the inbox row exists; the outbox holds ``outbox_rows``."""
    async with database.unit_of_work() as uow:
        assert not await row.exists(uow, written.key)
        assert await uow.inbox.mark_processed(written.event_id, "StockReserved")
    assert len(await database.outbox.claim_batch(10)) == outbox_rows


async def test_changes_are_visible_to_others_only_after_commit(
    database: Database[Any], service: str, clock: ManualClock
) -> None:
    row = BUSINESS_ROWS[service]
    async with database.unit_of_work() as writer:
        written = await write_all(writer, row, clock)
        assert await row.exists(writer, written.key)  # a transaction sees its own writes
        async with database.unit_of_work() as reader:
            assert not await row.exists(reader, written.key)
        assert await database.outbox.claim_batch(10) == []
        await writer.commit()

    async with database.unit_of_work() as reader:
        assert await row.exists(reader, written.key)
        assert not await reader.inbox.mark_processed(written.event_id, "StockReserved")
    assert len(await database.outbox.claim_batch(10)) == 1


async def test_leaving_without_commit_rolls_everything_back(
    database: Database[Any], service: str, clock: ManualClock
) -> None:
    row = BUSINESS_ROWS[service]
    async with database.unit_of_work() as uow:
        written = await write_all(uow, row, clock)
    await assert_nothing_stayed(database, row, written)


async def test_an_exception_rolls_everything_back_and_propagates(
    database: Database[Any], service: str, clock: ManualClock
) -> None:
    row = BUSINESS_ROWS[service]
    written: list[Written] = []

    class Boom(Exception):
        pass

    async def fail_midway() -> None:
        async with database.unit_of_work() as uow:
            written.append(await write_all(uow, row, clock))
            raise Boom

    with pytest.raises(Boom):
        await fail_midway()
    await assert_nothing_stayed(database, row, written[0])


async def test_rollback_discards_what_was_written_before_it(
    database: Database[Any], service: str, clock: ManualClock
) -> None:
    row = BUSINESS_ROWS[service]
    async with database.unit_of_work() as uow:
        dropped = await write_all(uow, row, clock)
        await uow.rollback()
        assert not await row.exists(uow, dropped.key)
        kept = await write_all(uow, row, clock)
        await uow.commit()

    async with database.unit_of_work() as uow:
        assert await row.exists(uow, kept.key)
    await assert_nothing_stayed(database, row, dropped, outbox_rows=1)  # only the kept one


async def test_work_after_a_commit_needs_its_own_commit(
    database: Database[Any], service: str, clock: ManualClock
) -> None:
    row = BUSINESS_ROWS[service]
    async with database.unit_of_work() as uow:
        kept = await write_all(uow, row, clock)
        await uow.commit()
        dropped = await write_all(uow, row, clock)

    async with database.unit_of_work() as uow:
        assert await row.exists(uow, kept.key)
        assert not await uow.inbox.mark_processed(kept.event_id, "StockReserved")
    await assert_nothing_stayed(database, row, dropped, outbox_rows=1)  # only the kept one

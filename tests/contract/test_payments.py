"""PaymentRepository: payments by order, their updates, and the cancelled orders."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from core_saga.memory import ManualClock
from core_saga.payments import Payment, PaymentStatus
from core_saga.ports import PaymentUnitOfWork, Position
from sqlalchemy.exc import IntegrityError

from tests.contract.builders import assert_waiting, new_payment, position, read_back
from tests.contract.conftest import Database


async def test_a_payment_round_trips_and_is_listed_by_order(
    payments: Database[PaymentUnitOfWork], clock: ManualClock
) -> None:
    first = new_payment(clock.now())
    second = new_payment(clock.advance(timedelta(seconds=1)))
    async with payments.unit_of_work() as uow:
        await uow.payments.add(second)
        await uow.payments.add(first)
        await uow.commit()

    async with payments.unit_of_work() as uow:
        assert await uow.payments.get_by_order(first.order_id) == first
        assert await uow.payments.get_by_order(uuid4()) is None
        assert await uow.payments.list(second.order_id) == [second]
        assert await uow.payments.list(uuid4()) == []
        assert await uow.payments.list() == [first, second]  # oldest first


async def test_save_persists_status_reason_and_update_time(
    payments: Database[PaymentUnitOfWork], clock: ManualClock
) -> None:
    payment = new_payment(clock.now())
    async with payments.unit_of_work() as uow:
        await uow.payments.add(payment)
        await uow.commit()

    refunded = replace(
        payment,
        status=PaymentStatus.REFUNDED,
        reason="Order cancelled",
        updated_at=clock.advance(timedelta(seconds=3)),
    )
    async with payments.unit_of_work() as uow:
        await uow.payments.save(refunded)
        await uow.commit()

    async with payments.unit_of_work() as uow:
        assert await uow.payments.get_by_order(payment.order_id) == refunded


async def test_a_cancelled_order_is_remembered_once_committed(
    payments: Database[PaymentUnitOfWork],
) -> None:
    order_id, other = uuid4(), uuid4()
    async with payments.unit_of_work() as uow:
        await uow.payments.mark_cancelled(other)  # rolled back

    async with payments.unit_of_work() as uow:
        assert not await uow.payments.was_cancelled(order_id)
        await uow.payments.mark_cancelled(order_id)
        await uow.payments.mark_cancelled(order_id)  # again: harmless
        assert await uow.payments.was_cancelled(order_id)
        await uow.commit()

    async with payments.unit_of_work() as uow:
        assert await uow.payments.was_cancelled(order_id)
        assert not await uow.payments.was_cancelled(other)
        await uow.payments.mark_cancelled(order_id)  # in a later transaction: still harmless
        await uow.commit()


async def test_lock_order_serialises_work_on_one_order(
    payments: Database[PaymentUnitOfWork],
) -> None:
    order_id = uuid4()

    async def lock(order: UUID) -> None:
        async with payments.unit_of_work() as uow:
            await uow.payments.lock_order(order)

    async with payments.unit_of_work() as first:
        await first.payments.lock_order(order_id)
        await first.payments.lock_order(order_id)  # a transaction may take its own lock again
        await asyncio.wait_for(lock(uuid4()), 10)  # another order is not held up
        second = asyncio.create_task(lock(order_id))
        await assert_waiting(second)
        await first.commit()
    await asyncio.wait_for(second, 10)


async def test_a_second_payment_for_an_order_is_refused(
    payments: Database[PaymentUnitOfWork], clock: ManualClock
) -> None:
    first = new_payment(clock.now())
    async with payments.unit_of_work() as uow:
        await uow.payments.add(first)
        await uow.commit()

    async def charge_again() -> None:
        async with payments.unit_of_work() as uow:
            await uow.payments.add(new_payment(clock.now(), order_id=first.order_id))
            await uow.commit()

    with pytest.raises((ValueError, IntegrityError)):  # the store itself keeps one per order
        await charge_again()

    async with payments.unit_of_work() as uow:
        assert await uow.payments.list(first.order_id) == [first]


async def test_list_returns_the_newest_payments_up_to_the_limit_oldest_first(
    payments: Database[PaymentUnitOfWork], clock: ManualClock
) -> None:
    oldest, middle, newest = (new_payment(clock.advance(timedelta(seconds=1))) for _ in range(3))
    tied = [new_payment(newest.created_at) for _ in range(2)]
    async with payments.unit_of_work() as uow:
        for payment in (newest, oldest, *tied, middle):
            await uow.payments.add(payment)
        await uow.commit()

    async with payments.unit_of_work() as uow:
        everything = await uow.payments.list()
        assert everything == [oldest, middle, *sorted([newest, *tied], key=lambda p: p.id)]
        assert await uow.payments.list(limit=2) == everything[-2:]  # ties broken by id
        assert await uow.payments.list(limit=4) == everything[-4:]
        assert await uow.payments.list(oldest.order_id, limit=1) == [oldest]


async def test_pages_before_a_position_list_every_payment_once_however_many_tie(
    payments: Database[PaymentUnitOfWork], clock: ManualClock
) -> None:
    """Nine of eleven payments share a created_at: only the id says where a page ends."""
    first, tied, last = (clock.advance(timedelta(seconds=1)) for _ in range(3))
    stored = [new_payment(first), *(new_payment(tied) for _ in range(9)), new_payment(last)]
    async with payments.unit_of_work() as uow:
        for payment in reversed(stored):
            await uow.payments.add(payment)
        await uow.commit()
    everything = sorted(stored, key=lambda p: (p.created_at, p.id))

    async def page(before: Position | None) -> Sequence[Payment]:
        async with payments.unit_of_work() as uow:
            return await uow.payments.list(limit=2, before=before)

    pages = await read_back(page)
    assert [len(rows) for rows in pages] == [2, 2, 2, 2, 2, 1]
    assert [row for rows in reversed(pages) for row in rows] == everything  # each once, in order

    third, fourth = everything[2:4]  # tied: with an order id, ``before`` applies as well
    async with payments.unit_of_work() as uow:
        assert await uow.payments.list(third.order_id, before=position(fourth)) == [third]
        assert await uow.payments.list(third.order_id, before=position(third)) == []


async def test_due_lists_the_payments_waiting_on_the_gateway_longest_waiting_first(
    payments: Database[PaymentUnitOfWork], clock: ManualClock
) -> None:
    start = clock.now()

    def at(seconds: int, status: PaymentStatus) -> Payment:
        changed = start + timedelta(seconds=seconds)
        return replace(new_payment(start), status=status, updated_at=changed)

    refunding = at(1, PaymentStatus.REFUNDING)
    pending = at(2, PaymentStatus.PENDING)
    tied = replace(at(5, PaymentStatus.PENDING), id=UUID(int=1))  # one settlement's instant
    later = replace(at(5, PaymentStatus.PENDING), id=UUID(int=2))
    settled = [at(0, status) for status in PaymentStatus if not status.due]
    async with payments.unit_of_work() as uow:
        for payment in (later, pending, *settled, tied, refunding):
            await uow.payments.add(payment)
        await uow.commit()

    async with payments.unit_of_work() as uow:
        assert await uow.payments.due(start + timedelta(seconds=2), 10) == [refunding, pending]
        assert await uow.payments.due(start + timedelta(seconds=9), 2) == [refunding, pending]
        assert await uow.payments.due(start, 10) == []
        end = start + timedelta(seconds=9)
        first = await uow.payments.due(end, 1)
        second = await uow.payments.due(end, 1, after=waited(first[0]))
        third = await uow.payments.due(end, 2, after=waited(second[0]))
        rest = await uow.payments.due(end, 10, after=waited(third[0]))
        assert [*first, *second, *third] == [refunding, pending, tied, later]
        assert rest == [later]  # a tie on updated_at goes on by id, not past both


def waited(payment: Payment) -> Position:
    """Where a page of due payments that ends at ``payment`` ends."""
    return payment.changed_at, payment.id

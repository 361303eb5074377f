"""NotificationRepository: at most one notification per order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from uuid import UUID, uuid4

from core_saga.memory import ManualClock
from core_saga.notifications import Notification, NotificationType
from core_saga.ports import NotificationUnitOfWork, Position

from tests.contract.builders import new_notification, position, read_back
from tests.contract.conftest import Database


async def test_an_order_gets_one_notification(
    notifications: Database[NotificationUnitOfWork], clock: ManualClock
) -> None:
    first = new_notification(clock.now())
    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.add(first)
        assert not await uow.notifications.add(new_notification(clock.now(), first.order_id))
        await uow.commit()

    later = new_notification(clock.advance(timedelta(seconds=1)), first.order_id)
    async with notifications.unit_of_work() as uow:
        assert not await uow.notifications.add(later)
        await uow.commit()

    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.list(first.order_id) == [first]


async def test_held_orders_get_one_notification_and_a_rollback_stores_none(
    notifications: Database[NotificationUnitOfWork], clock: ManualClock
) -> None:
    """As a consumer batch uses it: the orders held first, their notifications added after."""
    kept, dropped = new_notification(clock.now()), new_notification(clock.now())
    both = {kept.order_id, dropped.order_id}
    async with notifications.unit_of_work() as uow:
        await uow.hold(both)
        assert await uow.notifications.add(dropped)
        await uow.rollback()

    async with notifications.unit_of_work() as uow:
        await uow.hold(both)
        assert await uow.notifications.add(kept)
        assert not await uow.notifications.add(new_notification(clock.now(), kept.order_id))
        await uow.commit()

    async with notifications.unit_of_work() as uow:
        await uow.hold(both)
        assert not await uow.notifications.add(new_notification(clock.now(), kept.order_id))
        await uow.commit()

    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.list(kept.order_id) == [kept]
        assert await uow.notifications.list(dropped.order_id) == []


async def test_list_by_order_and_all_oldest_first(
    notifications: Database[NotificationUnitOfWork], clock: ManualClock
) -> None:
    older = new_notification(clock.now())
    newer = replace(
        new_notification(clock.advance(timedelta(seconds=1))),
        type=NotificationType.ORDER_CANCELLED,
        message="Your order was cancelled: Payment declined by provider.",
    )
    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.add(newer)
        assert await uow.notifications.add(older)
        await uow.commit()

    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.list(newer.order_id) == [newer]
        assert await uow.notifications.list(uuid4()) == []
        assert await uow.notifications.list() == [older, newer]


async def test_list_returns_the_newest_notifications_up_to_the_limit_oldest_first(
    notifications: Database[NotificationUnitOfWork], clock: ManualClock
) -> None:
    oldest, middle, newest = (
        new_notification(clock.advance(timedelta(seconds=1))) for _ in range(3)
    )
    tied = [new_notification(newest.created_at) for _ in range(2)]
    async with notifications.unit_of_work() as uow:
        for notification in (newest, oldest, *tied, middle):
            assert await uow.notifications.add(notification)
        await uow.commit()

    async with notifications.unit_of_work() as uow:
        everything = await uow.notifications.list()
        assert everything == [oldest, middle, *sorted([newest, *tied], key=lambda n: n.id)]
        assert await uow.notifications.list(limit=2) == everything[-2:]  # ties broken by id
        assert await uow.notifications.list(limit=4) == everything[-4:]
        assert await uow.notifications.list(oldest.order_id, limit=1) == [oldest]


async def test_pages_before_a_position_list_every_notification_once_however_many_tie(
    notifications: Database[NotificationUnitOfWork], clock: ManualClock
) -> None:
    """Nine of eleven notifications share a created_at: only the id says where a page ends."""
    first, tied, last = (clock.advance(timedelta(seconds=1)) for _ in range(3))
    stored = [
        new_notification(first),
        *(new_notification(tied) for _ in range(9)),
        new_notification(last),
    ]
    async with notifications.unit_of_work() as uow:
        for notification in reversed(stored):
            assert await uow.notifications.add(notification)
        await uow.commit()
    everything = sorted(stored, key=lambda n: (n.created_at, n.id))

    async def page(before: Position | None) -> Sequence[Notification]:
        async with notifications.unit_of_work() as uow:
            return await uow.notifications.list(limit=3, before=before)

    pages = await read_back(page)
    assert [len(rows) for rows in pages] == [3, 3, 3, 2]
    assert [row for rows in reversed(pages) for row in rows] == everything  # each once, in order

    third, fourth = everything[2:4]  # tied: with an order id, ``before`` applies as well
    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.list(third.order_id, before=position(fourth)) == [third]
        assert await uow.notifications.list(third.order_id, before=position(third)) == []


async def test_unsent_lists_what_was_stored_and_not_sent_longest_waiting_first(
    notifications: Database[NotificationUnitOfWork], clock: ManualClock
) -> None:
    start = clock.now()
    first = new_notification(start + timedelta(seconds=1))
    tied = replace(new_notification(start + timedelta(seconds=5)), id=UUID(int=1))
    later = replace(new_notification(start + timedelta(seconds=5)), id=UUID(int=2))
    held = new_notification(start + timedelta(seconds=6))
    async with notifications.unit_of_work() as uow:
        for notification in (later, first, tied):
            assert await uow.notifications.add(notification)  # not held: inserted at once
        await uow.commit()
    async with notifications.unit_of_work() as uow:
        await uow.hold({held.order_id})
        assert await uow.notifications.add(held)  # held: inserted at the commit
        await uow.commit()

    end = start + timedelta(seconds=9)
    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.unsent(end, 10) == [first, tied, later, held]
        assert await uow.notifications.unsent(start + timedelta(seconds=1), 10) == [first]
        assert await uow.notifications.unsent(start, 10) == []
        one = await uow.notifications.unsent(end, 1)
        two = await uow.notifications.unsent(end, 2, after=position(one[0]))
        rest = await uow.notifications.unsent(end, 10, after=position(two[0]))
        assert [*one, *two] == [first, tied, later]
        assert rest == [later, held]  # a tie on created_at goes on by id, not past both

    async with notifications.unit_of_work() as uow:
        await uow.notifications.mark_sent([tied, held])
        await uow.commit()
    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.unsent(end, 10) == [first, later]
        listed = await uow.notifications.list()  # all still stored, two of them sent
        assert [(n.id, n.sent) for n in listed] == [
            (first.id, False),
            (tied.id, True),
            (later.id, False),
            (held.id, True),
        ]

    async with notifications.unit_of_work() as uow:
        await uow.notifications.mark_sent([first, later])
        await uow.rollback()
    async with notifications.unit_of_work() as uow:
        assert await uow.notifications.unsent(end, 10) == [first, later]  # rolled back

"""NotificationRepository: at most one notification per order."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import uuid4

from core_saga.memory import ManualClock
from core_saga.notifications import NotificationType
from core_saga.ports import NotificationUnitOfWork

from tests.contract.builders import new_notification
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

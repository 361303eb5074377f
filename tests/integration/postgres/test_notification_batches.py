"""Notification batches read their orders once and insert every new notification at commit.

``hold`` locks the batch's orders and reads which already have a notification; ``add`` for
a held order answers from that and defers its row to the commit. These tests count the
statements, then check that every order still ends with exactly one notification however
its events repeat, that a rolled-back transaction leaves nothing (and forgets what it
added), and that ``add`` for an order the transaction does not hold still works.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from adapters_postgres.uow import PostgresNotificationUnitOfWork, notification_uow_factory
from core_saga.handlers.notification import NotificationService
from core_saga.memory import MemoryNotifier
from core_saga.messages import Envelope, OrderCancelled, OrderConfirmed, PaymentFailed
from core_saga.notifications import Notification, NotificationType
from core_saga.ports import InfrastructureError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock, wait_for_lock_waiters
from tests.integration.postgres.test_batch_writes import count
from tests.integration.postgres.test_batches import statements_on
from tests.integration.postgres.test_inventory_concurrency import envelope

INSERT = "WITH inserted AS (INSERT INTO notifications"
"""The notifications, and their ``notifications_unsent`` rows, in one statement."""

pytestmark = pytest.mark.integration


def confirmed(order_id: UUID) -> Envelope:
    return envelope(OrderConfirmed(order_id=order_id))


def cancelled(order_id: UUID) -> Envelope:
    return envelope(OrderCancelled(order_id=order_id, reason="timeout"))


def notification(order_id: UUID, clock: ManualClock) -> Notification:
    return Notification(
        uuid4(), order_id, NotificationType.ORDER_CONFIRMED, "c@example.com", "Done", clock.now()
    )


async def stored(engine: AsyncEngine, ids: list[UUID]) -> dict[UUID, list[str]]:
    """Each order's notification types (one each, if all is well)."""
    query = text("SELECT order_id, type FROM notifications WHERE order_id = ANY(:ids)")
    found: dict[UUID, list[str]] = {order_id: [] for order_id in ids}
    async with engine.connect() as conn:
        for order_id, kind in await conn.execute(query, {"ids": ids}):
            found[order_id].append(kind)
    return found


def service_on(
    engine: AsyncEngine, clock: ManualClock
) -> tuple[NotificationService, MemoryNotifier]:
    notifier = MemoryNotifier()
    return NotificationService(notification_uow_factory(engine), clock, notifier), notifier


async def test_a_batch_costs_the_same_statements_however_many_orders_it_has(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    service, notifier = service_on(notification_engine, clock)
    cost: dict[int, list[str]] = {}
    for size in (2, 12):
        ids = [uuid4() for _ in range(size)]
        batch = [confirmed(i) if n % 2 else cancelled(i) for n, i in enumerate(ids)]
        with statements_on(notification_engine) as cost[size]:
            await service.handle_batch(batch)
        assert await stored(notification_engine, ids) == {
            i: ["ORDER_CONFIRMED" if n % 2 else "ORDER_CANCELLED"] for n, i in enumerate(ids)
        }
        assert sorted(n.order_id for n in notifier.sent[-size:]) == sorted(ids)

    assert len(cost[2]) == len(cost[12]), cost
    for statements in cost.values():
        assert count(statements, "SELECT pg_advisory_xact_lock") == 1
        assert count(statements, "SELECT wanted.order_id") == 1
        assert count(statements, INSERT) == 1
        assert count(statements, "DELETE FROM notifications_unsent") == 1  # sent, recorded


async def test_one_event_costs_one_lock_one_read_and_one_insert(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    service, notifier = service_on(notification_engine, clock)
    order_id = uuid4()
    with statements_on(notification_engine) as statements:
        await service.handle(confirmed(order_id))
    assert count(statements, "SELECT pg_advisory_xact_lock") == 1
    assert count(statements, "SELECT wanted.order_id") == 1
    assert count(statements, INSERT) == 1
    assert await stored(notification_engine, [order_id]) == {order_id: ["ORDER_CONFIRMED"]}
    assert [n.order_id for n in notifier.sent] == [order_id]


async def test_repeated_events_within_and_across_batches_leave_one_notification_per_order(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    service, notifier = service_on(notification_engine, clock)
    ids = [uuid4() for _ in range(4)]
    again = confirmed(ids[0])  # the same message delivered twice
    # Within a batch: a redelivery, and a second terminal event for the same order.
    first = [again, again, confirmed(ids[1]), cancelled(ids[1]), cancelled(ids[2])]
    await service.handle_batch(first)
    assert await stored(notification_engine, ids) == {
        ids[0]: ["ORDER_CONFIRMED"],
        ids[1]: ["ORDER_CONFIRMED"],  # the first event decides
        ids[2]: ["ORDER_CANCELLED"],
        ids[3]: [],
    }
    assert sorted(n.order_id for n in notifier.sent) == sorted(ids[:3])

    # Across batches: orders notified earlier are read back as notified, new ones are added.
    second = [again, cancelled(ids[0]), confirmed(ids[2]), confirmed(ids[3]), cancelled(ids[3])]
    with statements_on(notification_engine) as statements:
        await service.handle_batch(second)
    assert count(statements, INSERT) == 1
    assert await stored(notification_engine, ids) == {
        ids[0]: ["ORDER_CONFIRMED"],
        ids[1]: ["ORDER_CONFIRMED"],
        ids[2]: ["ORDER_CANCELLED"],
        ids[3]: ["ORDER_CONFIRMED"],
    }
    assert sorted(n.order_id for n in notifier.sent) == sorted(ids)  # each sent once

    # A batch of orders all notified already writes nothing.
    with statements_on(notification_engine) as statements:
        await service.handle_batch([cancelled(i) for i in ids])
    assert count(statements, INSERT) == 0
    assert len(notifier.sent) == len(ids)


async def test_a_rolled_back_transaction_inserts_nothing_and_forgets_what_it_added(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    held, other = uuid4(), uuid4()
    async with notification_uow_factory(notification_engine)() as uow:
        await uow.hold({held})
        with statements_on(notification_engine) as statements:
            assert await uow.notifications.add(notification(held, clock))  # kept for commit
            assert await uow.notifications.add(notification(other, clock))  # not held: sent
            await uow.rollback()
        assert count(statements, INSERT) == 1
        assert await stored(notification_engine, [held, other]) == {held: [], other: []}

        # The next transaction on the same unit of work starts from the table, not memory.
        await uow.hold({held})
        assert await uow.notifications.add(notification(held, clock))
        await uow.commit()
    assert await stored(notification_engine, [held, other]) == {
        held: ["ORDER_CONFIRMED"],
        other: [],
    }


async def test_a_failed_batch_writes_nothing_and_its_retry_notifies_once(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    service, notifier = service_on(notification_engine, clock)
    ids = [uuid4() for _ in range(3)]
    batch = [confirmed(i) for i in ids]
    foreign = envelope(PaymentFailed(order_id=uuid4(), amount=Decimal(1), reason="declined"))

    with pytest.raises(Exception, match="does not apply PaymentFailed"):
        await service.handle_batch([*batch, foreign])

    assert await stored(notification_engine, ids) == {i: [] for i in ids}
    assert notifier.sent == []
    await service.handle_batch(batch)
    assert await stored(notification_engine, ids) == {i: ["ORDER_CONFIRMED"] for i in ids}
    assert sorted(n.order_id for n in notifier.sent) == sorted(ids)


async def test_add_without_hold_inserts_at_once_and_still_allows_one_per_order(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    loose, held = uuid4(), uuid4()
    async with notification_uow_factory(notification_engine)() as uow:
        with statements_on(notification_engine) as statements:
            assert await uow.notifications.add(notification(loose, clock))
        assert count(statements, INSERT) == 1  # not deferred
        assert not await uow.notifications.add(notification(loose, clock))
        # Held after its row was inserted in this transaction: read back as notified.
        await uow.hold({loose, held})
        assert not await uow.notifications.add(notification(loose, clock))
        assert await uow.notifications.add(notification(held, clock))
        assert not await uow.notifications.add(notification(held, clock))
        # The transaction reads what it added, deferred or not.
        listed = {n.order_id for n in await uow.notifications.list(limit=1000)}
        assert {loose, held} <= listed
        await uow.commit()
    assert await stored(notification_engine, [loose, held]) == {
        loose: ["ORDER_CONFIRMED"],
        held: ["ORDER_CONFIRMED"],
    }

    async with notification_uow_factory(notification_engine)() as uow:
        assert not await uow.notifications.add(notification(loose, clock))  # committed
        await uow.commit()


async def test_a_second_holder_waits_and_then_sees_the_first_ones_notification(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    order_id = uuid4()
    factory = notification_uow_factory(notification_engine)

    async def second(uow: PostgresNotificationUnitOfWork) -> bool:
        await uow.hold({order_id})  # waits for the first transaction's lock
        added = await uow.notifications.add(notification(order_id, clock))
        await uow.commit()
        return added

    async with factory() as first, factory() as other:
        await first.hold({order_id})
        assert await first.notifications.add(notification(order_id, clock))
        waiting = asyncio.create_task(second(other))
        await wait_for_lock_waiters(notification_engine, 1)
        await first.commit()
        assert not await waiting
    assert await stored(notification_engine, [order_id]) == {order_id: ["ORDER_CONFIRMED"]}


async def test_an_add_without_hold_waits_for_a_holder_and_then_stores_nothing(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    """Without the lock, it inserted at once and the holder's deferred insert was dropped at
    its commit (ON CONFLICT): both were told theirs was stored, and both would send."""
    order_id = uuid4()
    units = notification_uow_factory(notification_engine)
    async with units() as held:
        await held.hold({order_id})
        assert await held.notifications.add(notification(order_id, clock))

        async def loose_add() -> bool:
            async with units() as loose:
                added = await loose.notifications.add(notification(order_id, clock))
                await loose.commit()
            return added

        loose = asyncio.create_task(loose_add())
        await wait_for_lock_waiters(notification_engine, 1)
        await held.commit()
    assert await loose is False
    assert len(await stored(notification_engine, [order_id])) == 1


class _CommitLost(PostgresNotificationUnitOfWork):
    """Its deferred inserts reach the server, then the commit fails (a connection lost at
    COMMIT): the transaction rolls back."""

    async def commit(self) -> None:
        await self._notifications.flush()
        raise ConnectionResetError("the connection was lost at COMMIT")


async def test_a_batch_whose_commit_fails_after_its_inserts_stores_and_sends_nothing(
    notification_engine: AsyncEngine, clock: ManualClock
) -> None:
    notifier = MemoryNotifier()
    failing = NotificationService(lambda: _CommitLost(notification_engine), clock, notifier)
    ids = [uuid4() for _ in range(3)]
    batch = [confirmed(i) for i in ids]
    with statements_on(notification_engine) as statements, pytest.raises(InfrastructureError):
        await failing.handle_batch(batch)
    assert count(statements, INSERT) == 1  # sent, then rolled back
    assert await stored(notification_engine, ids) == {i: [] for i in ids}
    assert notifier.sent == []

    service, notifier = service_on(notification_engine, clock)
    await service.handle_batch(batch)
    assert await stored(notification_engine, ids) == {i: ["ORDER_CONFIRMED"] for i in ids}
    assert sorted(n.order_id for n in notifier.sent) == sorted(ids)

"""The shared handler step: inbox first, apply, write follow-ups, commit; or nothing at all."""

from __future__ import annotations

from uuid import uuid4

import pytest
from core_saga.handlers.exactly_once import apply_batch, apply_once, new_envelope
from core_saga.memory import ManualClock, MemoryNotificationDatabase
from core_saga.messages import Envelope, Event, OrderConfirmed, StockReleased, decode
from core_saga.ports import UnitOfWork

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db(clock: ManualClock) -> MemoryNotificationDatabase:
    return MemoryNotificationDatabase(clock)


def incoming(clock: ManualClock) -> Envelope:
    return new_envelope(OrderConfirmed(order_id=uuid4()), clock.now(), None)


async def test_follow_ups_are_written_with_identity_and_causality(
    db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    cause = incoming(clock)

    async def apply(uow: UnitOfWork, envelope: Envelope) -> list[Event]:
        return [StockReleased(order_id=envelope.payload.order_id)]

    assert await apply_once(db.unit_of_work, clock, cause, apply)
    [row] = db.outbox.rows
    sent = decode(row.message.value)
    assert sent.event_id != cause.event_id
    assert (sent.correlation_id, sent.causation_id) == (cause.payload.order_id, cause.event_id)
    assert sent.occurred_at == clock.now()
    assert (row.message.topic, row.message.key) == ("inventory-events", str(cause.payload.order_id))
    assert db.processed_events.rows == {cause.event_id: "OrderConfirmed"}


async def test_a_duplicate_is_not_applied(
    db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    calls: list[Envelope] = []

    async def apply(uow: UnitOfWork, envelope: Envelope) -> list[Event]:
        calls.append(envelope)
        return [StockReleased(order_id=envelope.payload.order_id)]

    cause = incoming(clock)
    assert await apply_once(db.unit_of_work, clock, cause, apply)
    assert not await apply_once(db.unit_of_work, clock, cause, apply)
    assert calls == [cause]
    assert len(db.outbox.rows) == 1


async def test_a_failure_rolls_back_the_inbox_row_so_a_redelivery_applies(
    db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    attempts: list[int] = []

    async def apply(uow: UnitOfWork, envelope: Envelope) -> list[Event]:
        attempts.append(1)
        await uow.outbox.add(new_envelope(StockReleased(order_id=uuid4()), clock.now(), None))
        if len(attempts) == 1:
            raise ConnectionError("lost the database")
        return []

    cause = incoming(clock)
    with pytest.raises(ConnectionError):
        await apply_once(db.unit_of_work, clock, cause, apply)
    assert db.processed_events.rows == {}
    assert db.outbox.rows == []
    assert await apply_once(db.unit_of_work, clock, cause, apply)
    assert len(attempts) == 2
    assert len(db.outbox.rows) == 1


async def test_a_batch_applies_in_order_skips_duplicates_and_commits_once(
    db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    first, second = incoming(clock), incoming(clock)
    seen: list[Envelope] = []

    async def apply(uow: UnitOfWork, envelope: Envelope) -> list[Event]:
        seen.append(envelope)
        return [StockReleased(order_id=envelope.payload.order_id)]

    assert await apply_once(db.unit_of_work, clock, first, apply)
    applied = await apply_batch(db.unit_of_work, clock, [first, second, second], apply)

    assert applied == [second]
    assert seen == [first, second]
    assert [decode(row.message.value).causation_id for row in db.outbox.rows] == [
        first.event_id,
        second.event_id,
    ]


async def test_a_failing_batch_keeps_nothing_of_any_of_its_events(
    db: MemoryNotificationDatabase, clock: ManualClock
) -> None:
    good, bad = incoming(clock), incoming(clock)

    async def apply(uow: UnitOfWork, envelope: Envelope) -> list[Event]:
        if envelope is bad:
            raise ValueError("cannot apply")
        return [StockReleased(order_id=envelope.payload.order_id)]

    with pytest.raises(ValueError, match="cannot apply"):
        await apply_batch(db.unit_of_work, clock, [good, bad], apply)

    assert db.processed_events.rows == {}
    assert db.outbox.rows == []

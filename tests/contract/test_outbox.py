"""Outbox.add and the relay's OutboxStore: committed rows, in order, published once."""

from __future__ import annotations

from datetime import timedelta

from core_saga.memory import ManualClock
from core_saga.messages import Envelope, decode
from core_saga.ports import UnitOfWork

from tests.contract.builders import order_created
from tests.contract.conftest import Database


async def write(
    database: Database[UnitOfWork], clock: ManualClock, count: int = 1
) -> list[Envelope]:
    """``count`` envelopes written (at the clock's time) and committed in one transaction."""
    envelopes = [order_created(clock.now()) for _ in range(count)]
    async with database.unit_of_work() as uow:
        for envelope in envelopes:
            await uow.outbox.add(envelope)
        await uow.commit()
    return envelopes


async def test_claim_returns_committed_rows_in_insertion_order(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    first = order_created(clock.now())
    async with database.unit_of_work() as uow:
        await uow.outbox.add(first, {"traceparent": "00-4bf92f3577b34da6-00f067aa0ba902b7-01"})
        await uow.commit()
    clock.advance(timedelta(seconds=1))
    rest = await write(database, clock, 3)

    claimed = await database.outbox.claim_batch(10)

    assert [pending.message.event_id for pending in claimed] == [
        envelope.event_id for envelope in [first, *rest]
    ]
    positions = [pending.position for pending in claimed]
    assert positions == sorted(positions) and len(set(positions)) == 4
    head = claimed[0]
    assert head.message.topic == "order-events"
    assert head.message.key == str(first.payload.order_id)
    assert head.message.event_type == "OrderCreated"
    assert head.message.headers == {"traceparent": "00-4bf92f3577b34da6-00f067aa0ba902b7-01"}
    assert decode(head.message.value) == first
    assert head.created_at == first.occurred_at
    assert claimed[1].message.headers == {}
    assert [decode(pending.message.value) for pending in claimed[1:]] == rest


async def test_claim_takes_at_most_limit_and_leaves_the_rows(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    envelopes = await write(database, clock, 3)
    assert [p.message.event_id for p in await database.outbox.claim_batch(2)] == [
        envelope.event_id for envelope in envelopes[:2]
    ]
    assert len(await database.outbox.claim_batch(10)) == 3  # claiming is not publishing


async def test_claim_skips_the_positions_still_at_the_broker(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    envelopes = await write(database, clock, 5)
    in_flight = await database.outbox.claim_batch(2)

    following = await database.outbox.claim_batch(2, skip=[p.position for p in in_flight])

    assert [p.message.event_id for p in following] == [e.event_id for e in envelopes[2:4]]
    everything_else = await database.outbox.claim_batch(10, skip=[in_flight[1].position])
    assert [p.message.event_id for p in everything_else] == [
        envelopes[0].event_id,
        *(e.event_id for e in envelopes[2:]),
    ]


async def test_published_rows_are_not_claimed_again(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    envelopes = await write(database, clock, 3)
    claimed = await database.outbox.claim_batch(2)

    await database.outbox.mark_published([p.position for p in claimed], clock.now())
    await database.outbox.mark_published([], clock.now())

    [left] = await database.outbox.claim_batch(10)
    assert left.message.event_id == envelopes[2].event_id
    await database.outbox.mark_published([left.position], clock.now())
    assert await database.outbox.claim_batch(10) == []


async def test_oldest_unpublished_age(database: Database[UnitOfWork], clock: ManualClock) -> None:
    assert await database.outbox.oldest_unpublished_age(clock.now()) == 0.0
    await write(database, clock)
    clock.advance(timedelta(seconds=5))
    await write(database, clock)
    clock.advance(timedelta(seconds=2))

    assert await database.outbox.oldest_unpublished_age(clock.now()) == 7.0
    oldest, newest = await database.outbox.claim_batch(10)
    await database.outbox.mark_published([oldest.position], clock.now())
    assert await database.outbox.oldest_unpublished_age(clock.now()) == 2.0
    await database.outbox.mark_published([newest.position], clock.now())
    assert await database.outbox.oldest_unpublished_age(clock.now()) == 0.0


async def test_delete_published_before_removes_only_rows_published_before_the_cutoff(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    start = clock.now()
    await write(database, clock, 3)
    early, late, waiting = await database.outbox.claim_batch(10)
    await database.outbox.mark_published([early.position], start + timedelta(minutes=1))
    await database.outbox.mark_published([late.position], start + timedelta(minutes=3))

    assert await database.outbox.delete_published_before(start + timedelta(minutes=2)) == 1
    assert await database.outbox.delete_published_before(start + timedelta(minutes=2)) == 0
    assert [p.position for p in await database.outbox.claim_batch(10)] == [waiting.position]
    assert await database.outbox.delete_published_before(start + timedelta(days=1)) == 1
    assert [p.position for p in await database.outbox.claim_batch(10)] == [waiting.position]


async def test_an_event_id_written_twice_is_one_row(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    envelope = order_created(clock.now())
    for _ in range(2):  # e.g. a retried transaction that reuses the event it built
        async with database.unit_of_work() as uow:
            await uow.outbox.add(envelope)
            await uow.commit()

    claimed = await database.outbox.claim_batch(10)

    assert [pending.message.event_id for pending in claimed] == [envelope.event_id]


async def test_requeued_rows_are_claimed_again_in_id_order(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    envelopes = await write(database, clock, 4)
    sent = await database.outbox.claim_batch(3)
    await database.outbox.mark_published([p.position for p in sent], clock.now())

    assert await database.outbox.requeue_published() == 3  # the fourth was never published
    again = await database.outbox.claim_batch(10)
    assert [p.message.event_id for p in again] == [e.event_id for e in envelopes]
    assert await database.outbox.requeue_published() == 0


async def test_a_requeue_since_a_moment_leaves_what_was_published_before_it(
    database: Database[UnitOfWork], clock: ManualClock
) -> None:
    envelopes = await write(database, clock, 3)
    start = clock.now()
    for minutes, pending in enumerate(await database.outbox.claim_batch(10)):
        await database.outbox.mark_published([pending.position], start + timedelta(minutes=minutes))

    assert await database.outbox.requeue_published(since=start + timedelta(seconds=30)) == 2
    again = await database.outbox.claim_batch(10)
    assert [p.message.event_id for p in again] == [e.event_id for e in envelopes[1:]]

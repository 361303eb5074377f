"""The outbox: a row exists only if its business transaction committed; the relay's store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from adapters_postgres.outbox import _OLDEST_UNPUBLISHED, PostgresOutboxStore
from adapters_postgres.uow import order_uow_factory
from core_saga.messages import decode
from core_saga.ports import InfrastructureError
from sqlalchemy import text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock, order_created

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("empty_outbox")]


async def outbox_ids(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as conn:
        return list(await conn.scalars(text("SELECT event_id FROM outbox ORDER BY id")))


async def test_a_committed_transaction_leaves_its_row(order_engine: AsyncEngine) -> None:
    envelope = order_created()
    async with order_uow_factory(order_engine)() as uow:
        await uow.outbox.add(envelope, {"traceparent": "00-abc-def-01"})
        await uow.commit()

    [pending] = await PostgresOutboxStore(order_engine).claim_batch(10)
    assert pending.message.event_id == envelope.event_id
    assert pending.message.topic == "order-events"
    assert pending.message.key == str(envelope.payload.order_id)
    assert pending.message.event_type == "OrderCreated"
    assert pending.message.headers == {"traceparent": "00-abc-def-01"}
    assert decode(pending.message.value) == envelope
    assert pending.created_at == envelope.occurred_at


async def test_a_rolled_back_transaction_leaves_nothing(order_engine: AsyncEngine) -> None:
    async with order_uow_factory(order_engine)() as uow:
        await uow.outbox.add(order_created())
        await uow.rollback()
    async with order_uow_factory(order_engine)() as uow:
        await uow.outbox.add(order_created())  # leaving without commit rolls back

    async def fail_midway() -> None:
        async with order_uow_factory(order_engine)() as uow:
            await uow.outbox.add(order_created())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_midway()
    assert await outbox_ids(order_engine) == []


async def test_the_same_event_id_is_written_once(order_engine: AsyncEngine) -> None:
    envelope = order_created()
    for _ in range(2):
        async with order_uow_factory(order_engine)() as uow:
            await uow.outbox.add(envelope)
            await uow.commit()
    assert await outbox_ids(order_engine) == [envelope.event_id]


async def test_store_claims_in_id_order_marks_deletes_and_measures_age(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    envelopes = [order_created(at=clock.now() + timedelta(seconds=i)) for i in range(5)]
    for envelope in envelopes:
        async with order_uow_factory(order_engine)() as uow:
            await uow.outbox.add(envelope)
            await uow.commit()
    store = PostgresOutboxStore(order_engine)
    clock.advance(10)
    assert await store.oldest_unpublished_age(clock.now()) == 10.0

    first = await store.claim_batch(3)
    assert [p.message.event_id for p in first] == [e.event_id for e in envelopes[:3]]
    assert [p.position for p in first] == sorted(p.position for p in first)
    await store.mark_published([p.position for p in first], clock.now())
    rest = await store.claim_batch(10)
    assert [p.message.event_id for p in rest] == [e.event_id for e in envelopes[3:]]
    assert await store.oldest_unpublished_age(clock.now()) == 7.0

    await store.mark_published([p.position for p in rest], clock.now() + timedelta(hours=1))
    assert await store.claim_batch(10) == []
    assert await store.oldest_unpublished_age(clock.now()) == 0.0
    assert await store.delete_published_before(clock.now() + timedelta(minutes=1)) == 3
    assert await outbox_ids(order_engine) == [e.event_id for e in envelopes[3:]]


async def test_the_age_is_read_from_one_entry_of_the_unpublished_index(
    order_engine: AsyncEngine, clock: ManualClock
) -> None:
    """However long the backlog, the gauge reads only the first unpublished row in id order
    (``min(created_at)`` read every one of them)."""
    async with order_uow_factory(order_engine)() as uow:
        for i in range(50):
            await uow.outbox.add(order_created(at=clock.now() + timedelta(seconds=i)))
        await uow.commit()
    store = PostgresOutboxStore(order_engine)
    sent = await store.claim_batch(10)
    await store.mark_published([p.position for p in sent], clock.now())
    clock.advance(60)
    assert await store.oldest_unpublished_age(clock.now()) == 50.0  # the 11th, written at +10 s

    gauge = _OLDEST_UNPUBLISHED.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    async with order_engine.connect() as conn:
        await conn.execute(text("ANALYZE outbox"))
        [plan] = await conn.scalar(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {gauge}"))
    top = plan["Plan"]
    [scan] = top["Plans"]
    assert (top["Node Type"], scan["Node Type"]) == ("Limit", "Index Scan")
    assert scan["Index Name"] == "outbox_unpublished_idx"
    assert scan["Actual Rows"] == 1


async def test_on_commit_hears_what_committed_and_nothing_else(order_engine: AsyncEngine) -> None:
    """Business counters hang on this hook: an event counts once, when its transaction
    commits, and never for an attempt that rolled back or failed to commit."""
    heard: list[str] = []
    factory = order_uow_factory(
        order_engine, on_commit=lambda events: heard.extend(str(e.event_id) for e in events)
    )
    committed = [order_created(), order_created()]
    async with factory() as uow:
        for envelope in committed:
            await uow.outbox.add(envelope)
        assert heard == []  # not before the commit
        await uow.commit()
    assert heard == [str(e.event_id) for e in committed]

    async with factory() as uow:
        await uow.outbox.add(order_created())
        await uow.rollback()
        await uow.commit()  # an empty transaction emits nothing
    async with factory() as uow:
        await uow.outbox.add(order_created())  # left without commit

    async def commit_on_a_killed_connection() -> None:
        async with factory() as uow:
            await uow.outbox.add(order_created())
            pid = await uow.connection.scalar(text("SELECT pg_backend_pid()"))
            async with order_engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await uow.commit()

    with pytest.raises(InfrastructureError):
        await commit_on_a_killed_connection()
    assert heard == [str(e.event_id) for e in committed]
    assert await outbox_ids(order_engine) == [e.event_id for e in committed]

"""Old inbox rows, published outbox rows and expired keys are purged in batches; fresh ones stay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from adapters_postgres.engine import create_engine
from adapters_postgres.housekeeping import purge_expired_keys, purge_processed_events
from adapters_postgres.outbox import PostgresOutboxStore
from adapters_postgres.tables import idempotency_keys, outbox, processed_events
from adapters_postgres.uow import order_uow_factory
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration


async def test_purges_only_what_is_past_its_time(new_database: DatabaseFactory) -> None:
    engine = create_engine(await new_database.create("order"))
    now = datetime.now(UTC)
    try:
        uow = order_uow_factory(engine)
        old_event = uuid4()
        async with uow() as work:
            for key, event_id in (("old", old_event), ("fresh", uuid4())):
                await work.inbox.mark_processed(event_id, "StockReserved")
                ttl = timedelta(hours=-1 if key == "old" else 1)
                assert await work.idempotency.claim(key, "hash", now, now + ttl) is None
            await work.commit()
        async with engine.begin() as conn:  # age one inbox row by a week
            await conn.execute(
                update(processed_events)
                .where(processed_events.c.event_id == old_event)
                .values(processed_at=now - timedelta(days=7))
            )

        assert await purge_processed_events(engine, now - timedelta(days=1)) == 1
        assert await purge_expired_keys(engine, now) == 1
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).select_from(processed_events)) == 1
            keys = (await conn.execute(select(idempotency_keys.c.key))).scalars().all()
        assert keys == ["fresh"]
    finally:
        await engine.dispose()


@contextlib.contextmanager
def deletes_and_commits(engine: AsyncEngine) -> Iterator[list[int | str]]:
    """What ``engine`` does meanwhile: each DELETE's row count, and each ``"commit"``."""
    seen: list[int | str] = []

    def executed(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            seen.append(cursor.rowcount)

    def committed(conn: Any) -> None:
        seen.append("commit")

    event.listen(engine.sync_engine, "after_cursor_execute", executed)
    event.listen(engine.sync_engine, "commit", committed)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", executed)
        event.remove(engine.sync_engine, "commit", committed)


async def age_inbox(engine: AsyncEngine, now: datetime) -> list[UUID]:
    """An inbox of five rows processed a week ago and one an hour ago; the old ids."""
    old = [uuid4() for _ in range(5)]
    rows = [(event_id, now - timedelta(days=7, minutes=i)) for i, event_id in enumerate(old)]
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE processed_events"))
        await conn.execute(
            insert(processed_events),
            [
                {"event_id": event_id, "event_type": "OrderCreated", "processed_at": at}
                for event_id, at in [*rows, (uuid4(), now - timedelta(hours=1))]
            ],
        )
    return old


async def inbox_ids(engine: AsyncEngine) -> set[UUID]:
    async with engine.connect() as conn:
        return set(await conn.scalars(select(processed_events.c.event_id)))


async def test_the_inbox_purge_deletes_in_batches_each_its_own_transaction(
    order_engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    old = await age_inbox(order_engine, now)
    kept = await inbox_ids(order_engine) - set(old)

    with deletes_and_commits(order_engine) as seen:
        assert await purge_processed_events(order_engine, now - timedelta(days=1), 2) == 5

    assert seen == [2, "commit", 2, "commit", 1, "commit"]
    assert await inbox_ids(order_engine) == kept


async def test_the_inbox_purge_passes_over_a_row_another_transaction_holds(
    order_engine: AsyncEngine,
) -> None:
    """A replica purging at the same moment holds its batch: this one takes other rows
    instead of waiting (and stops when it finds fewer than a batch)."""
    now = datetime.now(UTC)
    old = await age_inbox(order_engine, now)
    held = old[2]
    async with order_engine.connect() as other, other.begin():
        await other.execute(
            select(processed_events).where(processed_events.c.event_id == held).with_for_update()
        )
        purged = await asyncio.wait_for(
            purge_processed_events(order_engine, now - timedelta(days=1), 2), 10
        )
    assert purged == 4
    assert set(old) & await inbox_ids(order_engine) == {held}


async def test_the_outbox_purge_deletes_published_rows_in_batches(
    order_engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    published = [now - timedelta(hours=3, minutes=i) for i in range(5)]
    async with order_engine.begin() as conn:
        await conn.execute(text("TRUNCATE outbox"))
        await conn.execute(
            insert(outbox),
            [
                {
                    "event_id": uuid4(),
                    "topic": "order-events",
                    "key": "k",
                    "event_type": "OrderCreated",
                    "payload": {},
                    "created_at": now - timedelta(hours=4),
                    "published_at": at,
                }
                for at in [*published, now, None]  # five old, one fresh, one waiting
            ],
        )
    store = PostgresOutboxStore(order_engine, purge_batch=2)

    with deletes_and_commits(order_engine) as seen:
        assert await store.delete_published_before(now - timedelta(hours=1)) == 5

    assert seen == [2, "commit", 2, "commit", 1, "commit"]
    async with order_engine.connect() as conn:
        left = list(await conn.scalars(select(outbox.c.published_at).order_by(outbox.c.id)))
    assert left == [now, None]

"""Old inbox rows and expired idempotency keys are purged; fresh ones stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from adapters_postgres.engine import create_engine
from adapters_postgres.housekeeping import purge_expired_keys, purge_processed_events
from adapters_postgres.tables import idempotency_keys, processed_events
from adapters_postgres.uow import order_uow_factory
from sqlalchemy import func, select, update

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

"""Migrations behind a long transaction: a revision that needs a table lock gives way to the
table's writers (``lock_timeout``) and is tried again; a concurrent index build just waits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from adapters_postgres.engine import create_engine
from adapters_postgres.migrations import current_revisions, is_at_head, migrate
from core_saga.inventory import SEED_PRODUCTS
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.postgres import DatabaseFactory
from tests.integration.postgres.conftest import wait_for_lock_waiters

pytestmark = pytest.mark.integration

RETRIED = "is tried again"
FIRST, SECOND = (str(product.id) for product in SEED_PRODUCTS[:2])
SELL_ONE = "UPDATE products SET stock = stock - 1, sold = sold + 1 WHERE id = :id"


@asynccontextmanager
async def _reader_in_flight(engine: AsyncEngine) -> AsyncIterator[None]:
    """A transaction that locked one product row and stays open (a report, a stuck replica):
    an ``ALTER TABLE products`` waits for it."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1 FROM products WHERE id = :id FOR UPDATE"), {"id": FIRST})
        yield
        await conn.commit()


async def _column_types(engine: AsyncEngine) -> set[str]:
    query = text(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'products'"
        " AND column_name IN ('stock', 'reserved', 'sold')"
    )
    async with engine.connect() as conn:
        return set((await conn.scalars(query)).all())


async def _logged(caplog: pytest.LogCaptureFixture, words: str, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not any(words in record.getMessage() for record in caplog.records):
            await asyncio.sleep(0.02)


async def test_a_revision_behind_a_long_transaction_lets_writers_through_and_retries(
    new_database: DatabaseFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ``lock_timeout`` the ``ALTER TABLE`` would wait for the open transaction, and
    every sale behind it: the writer below would wait until that transaction ended."""
    caplog.set_level(logging.WARNING, logger="adapters_postgres.migrations")
    url = await new_database.create()
    await migrate(url, "inventory", "inventory_0005")
    engine = create_engine(url)
    upgrade = None
    try:
        async with _reader_in_flight(engine):
            upgrade = asyncio.create_task(migrate(url, "inventory", lock_timeout=0.2))
            await wait_for_lock_waiters(engine, 1)  # the ALTER waits for the reader
            async with engine.begin() as writer:
                await writer.execute(text("SET LOCAL lock_timeout = '10s'"))
                await writer.execute(text(SELL_ONE), {"id": SECOND})
            await _logged(caplog, RETRIED)
            assert not upgrade.done()
            assert await current_revisions(url, "inventory") == {"inventory_0005"}
        await asyncio.wait_for(upgrade, 30)
        assert await is_at_head(url, "inventory")
        assert await _column_types(engine) == {"bigint"}
    finally:
        if upgrade is not None and not upgrade.done():
            upgrade.cancel()
        await engine.dispose()


async def test_a_revision_locked_out_for_longer_than_retry_for_fails_and_leaves_the_pool_clean(
    new_database: DatabaseFactory,
) -> None:
    """The lock error is raised once the retries are used up, the revision is unstamped, and the
    caller's pooled connection gets its own ``lock_timeout`` back."""
    url = await new_database.create()
    await migrate(url, "inventory", "inventory_0005")
    engine, other = create_engine(url, pool_size=1), create_engine(url)
    try:
        async with _reader_in_flight(other):
            with pytest.raises(DBAPIError, match="lock timeout"):
                await migrate(engine, "inventory", lock_timeout=0.1, retry_for=1.0)
        assert await current_revisions(url, "inventory") == {"inventory_0005"}
        assert await _column_types(engine) == {"integer"}
        async with engine.connect() as conn:  # the one pooled connection the migration used
            assert await conn.scalar(text("SHOW lock_timeout")) == "0"
    finally:
        await engine.dispose()
        await other.dispose()


async def test_a_concurrent_index_build_waits_past_the_lock_timeout_without_retrying(
    new_database: DatabaseFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A concurrent build blocks no writer, so it waits for the transactions in flight however
    long they take: a timeout would only leave an INVALID index to drop and build again."""
    caplog.set_level(logging.WARNING, logger="adapters_postgres.migrations")
    url = await new_database.create()
    await migrate(url, "payment", "payment_0002")
    engine = create_engine(url)
    insert = (
        "INSERT INTO payments (id, order_id, amount, currency, status, created_at)"
        " VALUES (gen_random_uuid(), gen_random_uuid(), 1, 'EUR', 'SUCCEEDED', now())"
    )
    build = None
    try:
        async with engine.connect() as writer:
            await writer.execute(text(insert))
            build = asyncio.create_task(migrate(url, "payment", lock_timeout=0.1))
            await wait_for_lock_waiters(engine, 1)  # the build waits for the writer
            await asyncio.sleep(0.5)  # five lock timeouts
            assert not build.done()
            await writer.commit()
        await asyncio.wait_for(build, 30)
        assert await is_at_head(url, "payment")
        assert not [record for record in caplog.records if RETRIED in record.getMessage()]
    finally:
        if build is not None and not build.done():
            build.cancel()
        await engine.dispose()

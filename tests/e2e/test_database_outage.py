"""Every database connection of the platform dropped under load, twice (as a failover or a
restart of PostgreSQL looks from the services): the pools reconnect, consumers and relays
retry instead of dead-lettering, and every saga ends with every effect once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.e2e.platform import (
    INITIAL_STOCK,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    assert_confirmed_once_without_dead_letters,
    order_body,
    place_retrying,
    running_platform,
)

pytestmark = pytest.mark.e2e
ORDERS = 40


@pytest.fixture(scope="module")
async def dropped(postgres_admin_url: str) -> AsyncIterator[RunningPlatform]:
    async with running_platform(postgres_admin_url, PAYMENTS_SUCCEED) as running:
        yield running


async def drop_connections(admin_url: str, databases: list[str]) -> int:
    """Terminate every backend connected to ``databases``; how many there were."""
    admin = await asyncpg.connect(admin_url)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid()",
            databases,
        )
        return len(rows)
    finally:
        await admin.close()


async def test_dropped_connections_under_load_lose_nothing(
    dropped: RunningPlatform, postgres_admin_url: str
) -> None:
    platform = dropped.platform
    databases = [url.rsplit("/", 1)[1].split("?")[0] for url in platform.database_urls.values()]
    products = sorted(INITIAL_STOCK)

    async def place(index: int) -> str:
        body = order_body((products[index % len(products)], 1, "9.99"))
        order_id, _ = await place_retrying(dropped, body, f"drop-{uuid.uuid4()}")
        return order_id

    placing = asyncio.gather(*(place(i) for i in range(ORDERS)))
    for _ in range(2):
        await asyncio.sleep(0.3)
        assert await drop_connections(postgres_admin_url, databases) > 0
    ids = await placing

    await assert_confirmed_once_without_dead_letters(dropped, ids)

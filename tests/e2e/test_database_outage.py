"""Every database connection of the platform dropped under load, twice (as a failover or a
restart of PostgreSQL looks from the services): the pools reconnect, consumers and relays
retry instead of dead-lettering, and every saga ends with every effect once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from adapters_kafka.dead_letters import read_dead_letters
from adapters_kafka.settings import KafkaSettings
from core_saga.messages import SAGA_TOPICS

from tests.e2e.platform import (
    INITIAL_STOCK,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    assert_every_effect_once,
    order_body,
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
    keys = [f"drop-{uuid.uuid4()}" for _ in range(ORDERS)]
    products = sorted(INITIAL_STOCK)

    async def place(index: int) -> str:
        body = order_body((products[index % len(products)], 1, "9.99"))
        for _ in range(50):  # a client retries a failed POST with the same key
            response = await dropped.place(body, key=keys[index])
            if response.status_code in (200, 201):
                return str(response.json()["id"])
            assert response.status_code >= 500, response.text
            assert response.headers["content-type"] == "application/problem+json"
            await asyncio.sleep(0.1)
        raise AssertionError(f"order {index} was never accepted")

    placing = asyncio.gather(*(place(i) for i in range(ORDERS)))
    for _ in range(2):
        await asyncio.sleep(0.3)
        assert await drop_connections(postgres_admin_url, databases) > 0
    ids = await placing

    finals = [await dropped.terminal(order_id, seconds=90) for order_id in ids]
    # Not cancelled by their deadline: no event was lost to a dead-letter topic on the way.
    assert {order["status"] for order in finals} == {"CONFIRMED"}
    await assert_every_effect_once(dropped, dict(zip(ids, finals, strict=True)), 90)
    kafka = KafkaSettings(platform.bootstrap_servers)
    for topic in SAGA_TOPICS:  # an outage is retried, never dead-lettered
        assert await read_dead_letters(kafka, topic) == []

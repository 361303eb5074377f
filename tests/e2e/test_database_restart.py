"""PostgreSQL stopped and started again under load (a restart, or a failover to a server at
the same address): while it is down a POST answers 503 and changes nothing, consumers and
relays retry, and once it is back every saga ends with every effect once and nothing is
dead-lettered.

The platform gets a server of its own: stopping the session's would break every other
module's pooled connections.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from adapters_kafka.dead_letters import read_dead_letters
from adapters_kafka.settings import KafkaSettings
from adapters_postgres.embedded import EmbeddedPostgres
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
ORDERS = 30
SPREAD = 0.1  # seconds between the first attempts of two orders: 3 s of orders in all
DOWN = 3.0  # seconds the server stays stopped


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[EmbeddedPostgres]:
    # Not under pytest's basetemp, for the reason tests/fixtures/postgres.py gives.
    base = Path(tempfile.mkdtemp(prefix="commerce-restart-postgres-"))
    server = EmbeddedPostgres(base / "data")  # kept on stop, so that it can start again
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
async def restarted(server: EmbeddedPostgres) -> AsyncIterator[RunningPlatform]:
    async with running_platform(server.admin_url, PAYMENTS_SUCCEED) as running:
        yield running


async def test_orders_placed_across_a_database_restart_all_complete(
    restarted: RunningPlatform, server: EmbeddedPostgres
) -> None:
    keys = [f"restart-{uuid.uuid4()}" for _ in range(ORDERS)]
    products = sorted(INITIAL_STOCK)
    unavailable = 0

    async def place(index: int) -> str:
        """POST until accepted, retrying a 503 with the same key, as a client would."""
        nonlocal unavailable
        await asyncio.sleep(index * SPREAD)
        body = order_body((products[index % len(products)], 1, "9.99"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = await restarted.place(body, key=keys[index])
            if response.status_code in (200, 201):
                return str(response.json()["id"])
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            unavailable += 1
            await asyncio.sleep(float(response.headers["retry-after"]) / 5)
        raise AssertionError(f"order {index} was never accepted")

    placing = asyncio.gather(*(place(i) for i in range(ORDERS)))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(DOWN)
    await asyncio.to_thread(server.start)
    ids = await placing

    assert unavailable > 0  # the outage was real, and answered as one
    assert len(set(ids)) == ORDERS
    finals = [await restarted.terminal(order_id, seconds=90) for order_id in ids]
    # Not cancelled by their deadline: no event was lost to a dead-letter topic on the way.
    assert {order["status"] for order in finals} == {"CONFIRMED"}
    await assert_every_effect_once(restarted, dict(zip(ids, finals, strict=True)), 90)
    kafka = KafkaSettings(restarted.platform.bootstrap_servers)
    for topic in SAGA_TOPICS:  # an outage is retried, never dead-lettered
        assert await read_dead_letters(kafka, topic) == []

"""PostgreSQL stopped for 16 s and started again under load (a restart, or a failover to a
server at the same address): while it is down a POST answers 503 and changes nothing,
consumers and relays retry, and once it is back every saga, those in flight when it stopped
too, is confirmed before its deadline, with every effect once and nothing dead-lettered.

The platform gets a server of its own: stopping the session's would break every other
module's pooled connections.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from adapters_postgres.embedded import EmbeddedPostgres

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
ORDERS = 60
SPREAD = 0.05  # seconds between the first attempts of two orders: 3 s of orders in all
# Seconds the server stays stopped: long enough that retries backing off to 30 s (as they
# did) came 15 s after it was back, and cancelled by their 30 s deadline the orders in
# flight when it stopped; they back off to RECOVERY_BACKOFF_MAX (5 s) now.
DOWN = 16.0


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
    products = sorted(INITIAL_STOCK)

    async def place(index: int) -> tuple[str, int]:
        await asyncio.sleep(index * SPREAD)
        body = order_body((products[index % len(products)], 1, "9.99"))
        return await place_retrying(restarted, body, f"restart-{uuid.uuid4()}")

    placing = asyncio.gather(*(place(i) for i in range(ORDERS)))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(server.stop)
    await asyncio.sleep(DOWN)
    await asyncio.to_thread(server.start)
    placed = await placing

    assert sum(unavailable for _, unavailable in placed) > 0  # the outage was real, and a 503
    ids = [order_id for order_id, _ in placed]
    assert len(set(ids)) == ORDERS
    await assert_confirmed_once_without_dead_letters(restarted, ids)

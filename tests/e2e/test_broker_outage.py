"""No order is lost while the broker is unreachable: the outbox holds its events meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.e2e.platform import (
    EMBEDDED_BROKER_ONLY,
    HUB,
    MOUSE,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    order_body,
    running_platform,
)

pytestmark = [pytest.mark.e2e, EMBEDDED_BROKER_ONLY]


async def consumer_ready_reads(running: RunningPlatform, value: float) -> None:
    """Until every service's ``consumer_ready`` (sampled every 5 s) reads ``value``."""
    async with asyncio.timeout(30):
        while True:
            read = []
            for service in ("order", "inventory", "payment", "notification"):
                text = (await running.http.get(running.url(service, "/metrics"))).text
                [line] = [x for x in text.splitlines() if x.startswith("consumer_ready ")]
                read.append(float(line.split()[1]))
            if read == [value] * 4:
                return
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
async def outage(postgres_admin_url: str) -> AsyncIterator[RunningPlatform]:
    async with running_platform(postgres_admin_url, PAYMENTS_SUCCEED) as running:
        yield running


async def test_orders_placed_while_the_broker_is_down_complete_when_it_is_back(
    outage: RunningPlatform,
) -> None:
    before = (await outage.place(order_body((MOUSE, 1, "29.99")))).json()
    assert (await outage.terminal(before["id"]))["status"] == "CONFIRMED"

    outage.platform.pause_broker()
    placed = [await outage.place(order_body((HUB, 1, "39.50"))) for _ in range(3)]
    assert [r.status_code for r in placed] == [201, 201, 201]  # the API does not need Kafka
    async with asyncio.timeout(30):  # the order service reports the broker as down
        while (await outage.http.get(outage.url("order", "/health/ready"))).status_code != 503:
            await asyncio.sleep(0.1)
    for response in placed:
        assert (await outage.order(response.json()["id"]))["status"] == "PENDING"
    await consumer_ready_reads(outage, 0.0)  # the lag series stay as they were: no alert

    outage.platform.resume_broker()
    await consumer_ready_reads(outage, 1.0)
    for response in placed:
        order = await outage.terminal(response.json()["id"], seconds=90)
        assert order["status"] == "CONFIRMED"
    await outage.settled(placed[-1].json()["id"], seconds=60)
    products = await outage.products()
    assert products[HUB]["sold"] == 3
    assert products[MOUSE]["sold"] == 1

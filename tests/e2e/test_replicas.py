"""Two replicas of every service side by side: each effect still happens exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from commerce_apps.app import build_app
from commerce_apps.container import container_for
from commerce_apps.settings import SERVICES, ServiceName, Settings

from tests.e2e.platform import (
    INITIAL_STOCK,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    assert_every_effect_once,
    free_port,
    order_body,
    running_platform,
)

pytestmark = pytest.mark.e2e
QUICK_GROUPS = {"fetch_max_wait_ms": 10, "session_timeout_ms": 2_000, "heartbeat_interval_ms": 250}


@contextlib.asynccontextmanager
async def second_replicas(running: RunningPlatform) -> AsyncIterator[dict[ServiceName, str]]:
    """Another instance of each service on the same databases and broker; their URLs."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    urls: dict[ServiceName, str] = {}
    for service in SERVICES:
        settings = Settings(
            database_url=running.platform.database_urls[service],
            kafka_bootstrap_servers=running.platform.bootstrap_servers,
            payment_force_outcome="success",
            consumer_retry_backoff=0.1,
            kafka_namespace=running.platform.config.settings.kafka_namespace,
        )
        container = container_for(service, settings)
        container.consumer_options.override(QUICK_GROUPS)
        port = free_port()
        config = uvicorn.Config(build_app(container), host="127.0.0.1", port=port, log_config=None)
        server = uvicorn.Server(config)
        servers.append((server, asyncio.create_task(server.serve())))
        urls[service] = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60):
            for url in urls.values():
                while True:
                    with contextlib.suppress(Exception):
                        if (await running.http.get(f"{url}/health/ready")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
        yield urls
    finally:
        for server, _ in servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in servers), return_exceptions=True)


def handled(metrics: httpx.Response) -> float:
    """Events this instance applied, from its ``event_handler_duration_seconds`` histogram."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.text.splitlines()
        if line.startswith("event_handler_duration_seconds_count{")
    )


@pytest.fixture(scope="module")
async def doubled(postgres_admin_url: str) -> AsyncIterator[RunningPlatform]:
    async with running_platform(postgres_admin_url, PAYMENTS_SUCCEED) as running:
        yield running


async def test_two_replicas_of_each_service_apply_every_event_once(
    doubled: RunningPlatform,
) -> None:
    rng = random.Random(7)
    async with second_replicas(doubled) as replicas:
        entry_points = [doubled.url("order", ""), replicas["order"]]

        async def place(index: int) -> str:
            lines = [(p, rng.randint(1, 2), "9.99") for p in rng.sample(sorted(INITIAL_STOCK), 2)]
            response = await doubled.http.post(
                f"{entry_points[index % 2]}/api/orders",
                json=order_body(*lines),
                headers={"Idempotency-Key": f"replica-{index}"},
            )
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        ids = await asyncio.gather(*(place(i) for i in range(60)))
        finals = await asyncio.gather(*(doubled.terminal(i, seconds=60) for i in ids))
        async with asyncio.timeout(60):
            while len(await doubled.notifications()) < len(ids):
                await asyncio.sleep(0.1)
        # a replay through the other replica finds the same key: one order per key
        again = await doubled.http.post(
            f"{entry_points[1]}/api/orders",
            json=order_body(("11111111-1111-1111-1111-111111111111", 1, "9.99")),
            headers={"Idempotency-Key": "replica-0"},
        )
        assert again.status_code == 409
        for service in ("inventory", "payment", "notification"):  # both replicas did work
            for base in (doubled.url(service, ""), replicas[service]):
                assert handled(await doubled.http.get(f"{base}/metrics")) > 0, (service, base)

    await assert_every_effect_once(doubled, dict(zip(ids, finals, strict=True)))

"""A service starts while the broker is down: it takes orders, reports not-ready, and relays
them once the broker answers (a pod restarted during a Kafka outage must not crash-loop)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid

import httpx
import pytest
from adapters_kafka.embedded import EmbeddedBroker
from adapters_kafka.settings import KafkaSettings
from core_saga.messages import ORDER_TOPIC

from tests.e2e.platform import EMBEDDED_BROKER_ONLY, MOUSE, free_port, namespace, order_body
from tests.fixtures.postgres import DatabaseFactory
from tests.integration.kafka.support import read_topic

pytestmark = [pytest.mark.e2e, EMBEDDED_BROKER_ONLY]

COMMERCE = [sys.executable, "-c", "from commerce_apps.cli import main; main()"]


async def until_status(http: httpx.AsyncClient, url: str, status: int, seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while True:
            with_status = None
            with contextlib.suppress(httpx.TransportError):
                with_status = (await http.get(url)).status_code
            if with_status == status:
                return
            await asyncio.sleep(0.2)


async def test_the_order_service_starts_and_takes_orders_before_the_broker_is_up(
    new_database: DatabaseFactory,
) -> None:
    broker_port, http_port, prefix = free_port(), free_port(), namespace()
    servers = f"127.0.0.1:{broker_port}"
    env = {
        **os.environ,
        "DATABASE_URL": await new_database.create("order"),
        "KAFKA_BOOTSTRAP_SERVERS": servers,
        "KAFKA_NAMESPACE": prefix,
        "HOST": "127.0.0.1",
        "PORT": str(http_port),
    }
    process = await asyncio.create_subprocess_exec(
        *COMMERCE, "run", "order", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await until_status(http, f"{base}/health/live", 200, 60)
            assert (await http.get(f"{base}/health/ready")).status_code == 503
            placed = await http.post(
                f"{base}/api/orders",
                json=order_body((MOUSE, 1, "29.99")),
                headers={"Idempotency-Key": str(uuid.uuid4())},
            )
            assert placed.status_code == 201
            order_id = placed.json()["id"]
            metrics = (await http.get(f"{base}/metrics")).text
            assert "orders_created_total 1.0" in metrics  # counted at commit, not at publish
            assert "outbox_published_total 0.0" in metrics

            with EmbeddedBroker(port=broker_port):
                await until_status(http, f"{base}/health/ready", 200, 60)
                settings = KafkaSettings(bootstrap_servers=servers, namespace=prefix)
                [record] = await read_topic(settings, settings.named(ORDER_TOPIC), 1, within=30)
                assert record.key == order_id.encode()
                process.send_signal(signal.SIGTERM)  # as a container stops
                assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

"""Process mode: each service in a child process of its own, started and stopped by ``Platform``.

An order saga across four processes; the children's pids; a child whose stdin closes (its
parent died) drains on its own; a child that cannot start is named with its last output; no
child is left once the platform stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from commerce_apps import platform as platform_module
from commerce_apps.platform import Platform, PlatformConfig, PlatformError
from commerce_apps.settings import SERVICES, ServiceName, Settings
from core_saga.messages import ORDER_TOPIC

from tests.e2e.platform import (
    EMBEDDED_BROKER_ONLY,
    MOUSE,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    free_port,
    kafka_of,
    namespace,
    order_body,
)

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def process_config(
    postgres_admin_url: str, per_service: Mapping[ServiceName, Mapping[str, Any]]
) -> PlatformConfig:
    return PlatformConfig(
        settings=Settings(
            consumer_retry_backoff=0.1, log_level="WARNING", kafka_namespace=namespace()
        ),
        database_url=postgres_admin_url,
        database_prefix=f"proc_{uuid.uuid4().hex[:8]}_",
        kafka_bootstrap_servers=os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"),
        ports={service: free_port() for service in SERVICES},
        per_service=per_service,
        consumer_options={
            "fetch_max_wait_ms": 10,
            "session_timeout_ms": 2_000,
            "heartbeat_interval_ms": 250,
        },
        processes=True,
    )


@asynccontextmanager
async def started(platform: Platform) -> AsyncIterator[Platform]:
    await platform.start()
    try:
        yield platform
    finally:
        await platform.stop()


async def test_each_service_runs_in_its_own_process(postgres_admin_url: str) -> None:
    config = process_config(postgres_admin_url, PAYMENTS_SUCCEED)
    async with started(Platform(config)) as platform, httpx.AsyncClient(timeout=30) as http:
        pids = platform.pids
        assert set(pids) == set(SERVICES)
        assert len(set(pids.values())) == 4
        assert os.getpid() not in pids.values()

        running = RunningPlatform(platform, http)
        response = await running.place(order_body((MOUSE, 1, "29.99")))
        assert response.status_code == 201, response.text
        order = await running.terminal(response.json()["id"])
        assert order["status"] == "CONFIRMED"

        # Its parent gone (stdin closed), a child drains and exits on its own.
        notification = platform._children["notification"].process
        assert notification.stdin is not None
        notification.stdin.close()
        assert await asyncio.wait_for(notification.wait(), 20) == 0
    assert not any(alive(pid) for pid in pids.values())


async def test_a_child_that_dies_is_started_again_one_that_keeps_dying_ends_it(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service process killed outright (the OOM killer, say) took the whole platform down,
    its in-memory broker's events with it."""
    monkeypatch.setattr(platform_module, "RESTARTS", 1)
    config = process_config(postgres_admin_url, PAYMENTS_SUCCEED)
    async with started(Platform(config)) as platform, httpx.AsyncClient(timeout=30) as http:
        waiting = asyncio.create_task(platform.wait())
        first = platform.pids["notification"]
        os.kill(first, signal.SIGKILL)
        async with asyncio.timeout(30):
            while platform.pids.get("notification", first) == first:
                await asyncio.sleep(0.05)
        await platform.wait_ready()
        running = RunningPlatform(platform, http)
        response = await running.place(order_body((MOUSE, 1, "29.99")))
        order = await running.terminal(response.json()["id"])
        assert order["status"] == "CONFIRMED"
        await running.settled(order["id"])  # the new notification process sent it
        assert not waiting.done()

        os.kill(platform.pids["notification"], signal.SIGKILL)  # again, within the window
        with pytest.raises(PlatformError, match=r"^notification exited with status -9"):
            await asyncio.wait_for(waiting, 30)


async def test_a_service_that_cannot_start_is_named_with_its_output(
    postgres_admin_url: str,
) -> None:
    unreachable = "postgresql://nobody:secret@127.0.0.1:1/nothing"
    config = process_config(postgres_admin_url, {"inventory": {"database_url": unreachable}})
    platform = Platform(config)
    with pytest.raises(PlatformError) as failure:
        await platform.start()
    message = str(failure.value)
    assert message.startswith("inventory exited with status 1")
    assert "inventory database unreachable" in message
    assert platform.pids == {}


@EMBEDDED_BROKER_ONLY
async def test_topics_on_the_embedded_broker_get_one_partition(
    postgres_admin_url: str,
) -> None:
    config = dataclasses.replace(process_config(postgres_admin_url, {}), processes=False)
    async with started(Platform(config)) as platform:
        consumer = AIOKafkaConsumer(bootstrap_servers=platform.bootstrap_servers)
        await consumer.start()
        try:
            await consumer.topics()  # fetches the metadata
            assert consumer.partitions_for_topic(kafka_of(platform).named(ORDER_TOPIC)) == {0}
        finally:
            await consumer.stop()

"""A consumer killed after its transaction committed and before its offset did (DESIGN §4,
failure scenario 2), caught in that state rather than by chance.

The service is frozen (SIGSTOP) until the broker and its database disagree: an event its
inbox holds lies at or past its group's committed offset. Then it is killed (SIGKILL), so the
restarted service is sure to receive that event again, and must apply it zero more times.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Collection

import asyncpg
import httpx
import pytest
from adapters_kafka.headers import EVENT_ID, decode_headers
from adapters_postgres.engine import plain_url
from aiokafka import AIOKafkaConsumer, TopicPartition
from commerce_apps.platform import Platform
from commerce_apps.settings import ServiceName

from tests.e2e.platform import (
    INITIAL_STOCK,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    assert_confirmed_once_without_dead_letters,
    kafka_of,
    order_body,
)
from tests.e2e.test_crashes import group_offsets, log_ends
from tests.e2e.test_processes import process_config, started

pytestmark = pytest.mark.e2e
MAX_ORDERS = len(INITIAL_STOCK) * min(INITIAL_STOCK.values())  # one each: within every stock
ATTEMPTS = 300
PACE = 0.03  # seconds between orders


async def freeze(pid: int) -> None:
    """SIGSTOP, and wait until the kernel reports the process stopped (state ``T``)."""
    os.kill(pid, signal.SIGSTOP)
    async with asyncio.timeout(5):
        while state(pid) != "T":
            await asyncio.sleep(0.001)


def state(pid: int) -> str:
    """The process's state letter from ``/proc/PID/stat`` (after its name, which may hold
    spaces and parentheses)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


async def applied_past_the_offsets(platform: Platform, service: ServiceName) -> set[str]:
    """Event ids the service's inbox holds whose records lie at or past its group's committed
    offsets: committed in its database, not acknowledged to the broker."""
    servers = platform.bootstrap_servers
    offsets = await group_offsets(kafka_of(platform), service)
    conn = await asyncpg.connect(plain_url(platform.database_urls[service]))
    try:
        inbox = {str(row[0]) for row in await conn.fetch("SELECT event_id FROM processed_events")}
    finally:
        await conn.close()
    return inbox & await event_ids_from(servers, offsets)


async def event_ids_from(servers: str, offsets: dict[TopicPartition, int]) -> set[str]:
    """The ``eventId`` header of every record from each partition's offset to its end."""
    if not offsets:
        return set()
    ends = await log_ends(servers, offsets)
    wanted: Collection[TopicPartition] = [tp for tp in offsets if offsets[tp] < ends[tp]]
    if not wanted:
        return set()
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, offsets[tp])
        ids: set[str] = set()
        async with asyncio.timeout(30):
            while [tp for tp in wanted if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    ids.update(decode_headers(r.headers).get(EVENT_ID, "") for r in records)
        return ids
    finally:
        await consumer.stop()


async def kill_between_commits(platform: Platform, service: ServiceName) -> set[str]:
    """Freeze the service until it has applied an event whose offset is not committed, kill
    it then; the events caught so. Fails if no attempt catches it (none would be proved)."""
    pid = platform.pids[service]
    for _ in range(ATTEMPTS):
        await freeze(pid)
        if caught := await applied_past_the_offsets(platform, service):
            os.kill(pid, signal.SIGKILL)
            return caught
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{service} was never caught between its two commits")


@pytest.mark.parametrize("service", ["inventory", "payment"])
async def test_a_consumer_killed_between_its_two_commits_applies_the_event_once(
    postgres_admin_url: str, service: ServiceName
) -> None:
    config = process_config(postgres_admin_url, PAYMENTS_SUCCEED)
    async with started(Platform(config)) as platform, httpx.AsyncClient(timeout=30) as http:
        running = RunningPlatform(platform, http)
        products = sorted(INITIAL_STOCK)
        ids: list[str] = []
        killed = asyncio.Event()

        async def place_until_killed() -> None:
            """One order at a time, so the service commits often: small transactions, each
            followed by its offset's commit. Paced, so that the stock lasts 5 s at least."""
            while not killed.is_set() and len(ids) < MAX_ORDERS:
                body = order_body((products[len(ids) % len(products)], 1, "9.99"))
                response = await running.place(body, key=f"between-{uuid.uuid4()}")
                assert response.status_code == 201, response.text
                ids.append(str(response.json()["id"]))
                await asyncio.sleep(PACE)

        placing = asyncio.ensure_future(place_until_killed())
        try:
            caught = await kill_between_commits(platform, service)
        finally:
            killed.set()
        await placing
        await platform.stop_service(service)  # collects the dead process
        await platform.start_service(service)
        await platform.wait_ready()

        await assert_confirmed_once_without_dead_letters(running, ids)
        # The restarted service received the caught events again: they are past its offsets
        # no longer, and are still in its inbox once (a primary key: nothing to count twice).
        assert not caught & await applied_past_the_offsets(platform, service)

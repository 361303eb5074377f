"""Services killed outright mid-saga (SIGKILL: no drain, no offset or outbox left tidy), then
restarted: every saga still ends, and every effect happens exactly once.

A killed consumer may have committed its transaction but not its offset (the event comes
again and the inbox absorbs it), or its offset's batch may be half applied (rolled back, so
the event comes again and applies once); a killed relay may have published rows it never
marked (sent again, absorbed by the consumers' inboxes) or claimed none yet (the next relay
sends them).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterable

import httpx
import pytest
from adapters_kafka.settings import KafkaSettings
from aiokafka import AIOKafkaConsumer, TopicPartition
from commerce_apps.platform import Platform
from commerce_apps.settings import SERVICES, ServiceName
from core_saga.messages import SAGA_TOPICS

from tests.e2e.platform import (
    INITIAL_STOCK,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    assert_every_effect_once,
    kafka_of,
    order_body,
)
from tests.e2e.test_processes import process_config, started
from tests.e2e.test_replicas import handled

pytestmark = pytest.mark.e2e
ORDERS = 60


async def crash_and_restart(
    platform: Platform, *services: ServiceName, before_restart: bool = False
) -> None:
    """SIGKILL each service's process, then start it again and wait until all are ready
    (``before_restart``: rewind every group to offset 0 in between)."""
    for service in services:
        os.kill(platform.pids[service], signal.SIGKILL)
    for service in services:
        await platform.stop_service(service)  # collects the dead process
    if before_restart:
        await rewind_groups(kafka_of(platform))
    for service in services:
        await platform.start_service(service)
    await platform.wait_ready()


async def group_offsets(kafka: KafkaSettings, service: ServiceName) -> dict[TopicPartition, int]:
    """The service group's committed offset of each saga partition it consumes."""
    group = kafka.named(f"{service}-service")
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, group_id=group)
    await consumer.start()
    try:
        await consumer.topics()
        offsets = {}
        for topic in map(kafka.named, SAGA_TOPICS):
            for partition in consumer.partitions_for_topic(topic) or ():
                tp = TopicPartition(topic, partition)
                if (committed := await consumer.committed(tp)) is not None:
                    offsets[tp] = committed
        return offsets
    finally:
        await consumer.stop()


async def rewind_groups(kafka: KafkaSettings) -> None:
    """Every service group back to offset 0: as if no offset commit had ever reached Kafka.

    Committed by a member of the group (Tansu refuses commits from outside it): it joins once
    the killed members' sessions expired, commits, and leaves."""

    async def rewind(service: ServiceName) -> None:
        offsets = await group_offsets(kafka, service)
        assert offsets, f"{service} committed nothing"
        member = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=kafka.named(f"{service}-service"),
            enable_auto_commit=False,
            session_timeout_ms=2_000,
            heartbeat_interval_ms=250,
        )
        member.subscribe(sorted({tp.topic for tp in offsets}))
        await member.start()
        try:
            async with asyncio.timeout(60):
                while set(member.assignment()) != set(offsets):
                    member.pause(*member.assignment())  # join, fetch nothing
                    await member.getmany(timeout_ms=100)
            await member.commit(dict.fromkeys(offsets, 0))
        finally:
            await member.stop()

    await asyncio.gather(*(rewind(service) for service in SERVICES))


async def log_ends(servers: str, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
    """Each partition's end, from a fetch's high watermark. Not ``end_offsets``: Tansu's
    ListOffsets answers the last record batch's first offset + 1, short of the end whenever
    that batch holds several records (as the relay's do)."""
    wanted = list(partitions)
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        consumer.assign(wanted)
        for tp in wanted:
            consumer.seek(tp, 0)
        ends: dict[TopicPartition, int] = {}
        while len(ends) < len(wanted):
            await consumer.getmany(timeout_ms=100, max_records=1)
            ends.update({tp: end for tp in wanted if (end := consumer.highwater(tp)) is not None})
        return ends
    finally:
        await consumer.stop()


async def wait_until_consumed(kafka: KafkaSettings, seconds: float = 90) -> None:
    """Until every service group committed the end of each partition it consumes."""
    async with asyncio.timeout(seconds):
        for service in SERVICES:
            while (offsets := await group_offsets(kafka, service)) != await log_ends(
                kafka.bootstrap_servers, offsets
            ):
                await asyncio.sleep(0.2)


async def test_services_killed_mid_saga_finish_every_saga_once(postgres_admin_url: str) -> None:
    config = process_config(postgres_admin_url, PAYMENTS_SUCCEED)
    rng = random.Random(11)
    async with started(Platform(config)) as platform, httpx.AsyncClient(timeout=30) as http:
        running = RunningPlatform(platform, http)
        placed: list[str] = []

        async def place(index: int) -> None:
            lines = [(p, rng.randint(1, 2), "9.99") for p in rng.sample(sorted(INITIAL_STOCK), 2)]
            response = await running.place(order_body(*lines), key=f"crash-{index}")
            assert response.status_code == 201, response.text
            placed.append(str(response.json()["id"]))

        async def place_all(indexes: range, at_once: int) -> None:
            limit = asyncio.Semaphore(at_once)

            async def one(index: int) -> None:
                async with limit:
                    await place(index)

            await asyncio.gather(*(one(i) for i in indexes))

        # Inventory and payment die while orders keep coming: sagas are in flight in them.
        placing = asyncio.ensure_future(place_all(range(ORDERS), 4))
        while len(placed) < ORDERS // 3:
            await asyncio.sleep(0.01)
        await crash_and_restart(platform, "inventory", "payment")
        await placing
        # The order and notification services die right after the last POSTs: their events
        # are still in the outbox or on their way.
        await crash_and_restart(platform, "order", "notification")

        finals = [await running.terminal(order_id, seconds=90) for order_id in placed]
        await assert_every_effect_once(running, dict(zip(placed, finals, strict=True)), 90)


async def test_a_crash_that_lost_every_offset_commit_applies_nothing_twice(
    postgres_admin_url: str,
) -> None:
    """The worst case of dying between a transaction's commit and its offset's: every event
    of every topic is delivered again after the restart, and nothing happens twice. (The
    inboxes absorb them; with the inbox disabled this still passes, as each handler also
    refuses a second reservation, charge, transition or notification for an order.)"""
    config = process_config(postgres_admin_url, PAYMENTS_SUCCEED)
    async with started(Platform(config)) as platform, httpx.AsyncClient(timeout=30) as http:
        running = RunningPlatform(platform, http)
        bodies = [order_body((product, 1, "9.99")) for product in sorted(INITIAL_STOCK) * 4]
        responses = await asyncio.gather(*(running.place(body) for body in bodies))
        ids = [str(response.json()["id"]) for response in responses]
        finals = [await running.terminal(order_id, seconds=60) for order_id in ids]
        await assert_every_effect_once(running, dict(zip(ids, finals, strict=True)))
        await wait_until_consumed(kafka_of(platform))

        await crash_and_restart(platform, *SERVICES, before_restart=True)
        await wait_until_consumed(kafka_of(platform))
        # Everything came again: the fresh notification process saw every order's end.
        metrics = await http.get(running.url("notification", "/metrics"))
        assert handled(metrics) == len(ids)
        again = [await running.order(order_id) for order_id in ids]
        assert again == finals
        await assert_every_effect_once(running, dict(zip(ids, again, strict=True)))

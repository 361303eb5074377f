"""Two members of one group share the partitions; membership changes lose and reorder nothing."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import pytest
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings

from tests.fixtures.kafka import unique_name
from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import (
    InboxHandler,
    Probe,
    RecordingHooks,
    order_event,
    topic_size,
)

pytestmark = pytest.mark.integration

MESSAGES, KEYS, BATCH = 5_000, 200, 100


async def test_each_message_is_applied_once_in_key_order_while_a_member_leaves_and_rejoins(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic, group = await new_topic("group"), unique_name("group")
    orders = [uuid4() for _ in range(KEYS)]
    messages = [order_event(topic, orders[n % KEYS]) for n in range(MESSAGES)]
    sent: defaultdict[str, list[UUID]] = defaultdict(list)
    for message in messages:
        sent[message.key].append(message.event_id)

    probe = Probe()
    handler = InboxHandler(probe)
    hooks_a, hooks_b = RecordingHooks(probe), RecordingHooks(probe)
    member_a = await start_runner(handler, topic, group, hooks=hooks_a)
    member_b = await start_runner(handler, topic, group, hooks=hooks_b)
    await probe.wait_for(
        lambda: len(hooks_a.partitions) == len(hooks_b.partitions) == 3,
        "both members to own three partitions",
    )
    rejoined = asyncio.Event()

    async def produce() -> None:
        for start in range(0, MESSAGES, BATCH):
            if start == MESSAGES - 5 * BATCH:
                await rejoined.wait()  # so the rejoined member surely gets work
            await kafka_publisher.publish(messages[start : start + BATCH])
            await asyncio.sleep(0.05)  # pacing, so membership changes happen mid-stream

    producer = asyncio.create_task(produce())
    await probe.wait_for(lambda: handler.applied_count >= 1_000, "the first 1,000 messages")
    await member_b.stop()
    handled_before_leaving = hooks_b.handled_count
    await probe.wait_for(lambda: handler.applied_count >= 2_500, "2,500 messages")
    await member_b.start()
    await probe.wait_for(lambda: len(hooks_b.partitions) == 3, "the member to rejoin")
    rejoined.set()
    await producer
    await probe.wait_for(
        lambda: handler.applied_count == MESSAGES, "every message to be applied", within=60
    )

    assert dict(handler.applied) == sent  # each once, in per-key order
    assert handled_before_leaving > 0
    assert hooks_b.handled_count > handled_before_leaving
    assert hooks_a.handled_count + hooks_b.handled_count >= MESSAGES
    assert member_a.ready
    assert member_b.ready
    assert await topic_size(kafka_settings, f"{topic}.DLT") == 0

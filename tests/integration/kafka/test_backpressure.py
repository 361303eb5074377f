"""A slow partition is paused rather than buffered without bound, and loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import uuid4

import pytest
from adapters_kafka.publisher import KafkaPublisher
from core_saga.messages import Envelope

from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import InboxHandler, Probe, eventually, order_event

pytestmark = pytest.mark.integration


async def test_a_paused_partition_resumes_where_it_stopped(
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic, order_id = await new_topic("slow"), uuid4()
    messages = [order_event(topic, order_id) for _ in range(300)]
    first_may_finish = asyncio.Event()

    async def slow_down_once(envelope: Envelope) -> None:
        if envelope.event_id == messages[0].event_id:
            await first_may_finish.wait()

    probe = Probe()
    handler = InboxHandler(probe, after_commit=slow_down_once)
    runner = await start_runner(handler, topic, max_buffered=20)
    await kafka_publisher.publish(messages)
    await probe.wait_for(lambda: handler.applied_count == 1, "the first message")

    await eventually(lambda: runner.backlog >= 10, "records to queue behind it")
    await asyncio.sleep(0.2)  # an observation window: the absence of growth has no event
    assert runner.backlog < 20
    first_may_finish.set()
    await probe.wait_for(lambda: handler.applied_count == len(messages), "every message")

    assert handler.applied[str(order_id)] == [message.event_id for message in messages]

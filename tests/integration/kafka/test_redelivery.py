"""A consumer stopped between its database commit and its offset commit: the inbox absorbs it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import uuid4

import pytest
from adapters_kafka.publisher import KafkaPublisher
from core_saga.messages import Envelope

from tests.fixtures.kafka import unique_name
from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import InboxHandler, Probe, order_event

pytestmark = pytest.mark.integration


async def test_a_message_committed_but_not_acknowledged_comes_again_as_a_no_op(
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic, group = await new_topic("crash"), unique_name("group")
    order_id = uuid4()
    before, crashing, after = (order_event(topic, order_id) for _ in range(3))
    committed_once = asyncio.Event()

    async def hang_after_first_commit(envelope: Envelope) -> None:
        if envelope.event_id == crashing.event_id and not committed_once.is_set():
            committed_once.set()
            await asyncio.Event().wait()  # the process "dies" here: stopped, never returns

    probe = Probe()
    handler = InboxHandler(probe, after_commit=hang_after_first_commit)
    first = await start_runner(handler, topic, group, shutdown_grace=0.1)
    await kafka_publisher.publish([before, crashing, after])
    async with asyncio.timeout(20):
        await committed_once.wait()
    await first.stop()  # abandons the hung record: its offset stays uncommitted

    await start_runner(handler, topic, group)
    await probe.wait_for(lambda: handler.deliveries[after.event_id] == 1, "the next message")

    assert handler.applied[str(order_id)] == [before.event_id, crashing.event_id, after.event_id]
    assert handler.deliveries[crashing.event_id] == 2  # delivered again, applied once
    assert handler.deliveries[before.event_id] == 1  # finished work was committed on stop

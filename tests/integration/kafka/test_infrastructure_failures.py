"""An infrastructure failure is retried, never dead-lettered, and reported as not ready."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import uuid4

import pytest
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from core_saga.messages import Envelope
from core_saga.ports import InfrastructureError

from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import Probe, RecordingHandler, order_event, topic_size

pytestmark = pytest.mark.integration


class PoolTimeout(Exception):
    """Stands for a driver error only the application knows to be transient."""


OUTAGE = [InfrastructureError("database is down"), ConnectionRefusedError(), PoolTimeout()]


async def test_the_same_message_is_retried_until_the_infrastructure_recovers(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic = await new_topic("outage")
    order_id = uuid4()
    first, second = order_event(topic, order_id), order_event(topic, order_id)
    outage = {"over": False}

    def fail(envelope: Envelope) -> None:
        calls = handler.calls[envelope.event_id]
        if not outage["over"]:
            raise OUTAGE[calls % len(OUTAGE)]

    probe = Probe()
    handler = RecordingHandler(probe, fail=fail)
    runner = await start_runner(
        handler, topic, is_infrastructure=lambda error: isinstance(error, PoolTimeout)
    )
    await kafka_publisher.publish([first, second])

    await probe.wait_for(
        lambda: handler.calls[first.event_id] > 2 * len(OUTAGE), "several failed attempts"
    )
    assert not runner.ready
    assert handler.calls[second.event_id] == 0  # the partition waits for the failed message

    outage["over"] = True
    await probe.wait_for(
        lambda: handler.applied == [first.event_id, second.event_id], "both messages, in order"
    )
    assert runner.ready
    assert await topic_size(kafka_settings, f"{topic}.DLT") == 0

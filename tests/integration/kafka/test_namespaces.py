"""Two platforms on one broker, each in its own namespace: topics, consumer groups and
dead letters of one are never the other's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from adapters_kafka.consumer import ConsumerRunner
from adapters_kafka.dead_letters import read_dead_letters
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from adapters_kafka.topics import ensure_topics
from core_saga.messages import ORDER_TOPIC, SAGA_TOPICS, Envelope, dead_letter_topic
from core_saga.ports import DomainError

from tests.fixtures.kafka import unique_name
from tests.integration.kafka.conftest import QUICK_RETRY
from tests.integration.kafka.support import (
    Probe,
    RecordingHandler,
    eventually,
    order_event,
    read_topic,
    topic_size,
)

pytestmark = pytest.mark.integration


class Refused(DomainError):
    pass


async def test_a_namespace_keeps_topics_groups_and_dead_letters_apart(
    kafka_settings: KafkaSettings, kafka_consumer_options: Mapping[str, Any]
) -> None:
    ours = replace(kafka_settings, namespace=f"{unique_name('ours')}.")
    theirs = replace(kafka_settings, namespace=f"{unique_name('theirs')}.")
    created = await ensure_topics(ours, SAGA_TOPICS, partitions=1)
    assert set(created) == {ours.named(t) for t in SAGA_TOPICS} | {
        ours.named(dead_letter_topic(t)) for t in SAGA_TOPICS
    }
    await ensure_topics(theirs, SAGA_TOPICS, partitions=1)

    good, bad = order_event(ORDER_TOPIC), order_event(ORDER_TOPIC)

    def refuse(envelope: Envelope) -> None:
        if envelope.event_id == bad.event_id:
            raise Refused("not this one")

    probe = Probe()
    handler = RecordingHandler(probe, fail=refuse)
    async with KafkaPublisher(ours) as publisher:
        runner = ConsumerRunner(
            ours,
            "namespaced",
            handler,
            publisher=publisher,
            retry=QUICK_RETRY,
            consumer_options=kafka_consumer_options,
        )
        assert runner.group_id == ours.named("namespaced")
        assert runner.topics == sorted(ours.named(t) for t in SAGA_TOPICS)
        await runner.start()
        try:
            await publisher.publish([good, bad])  # the saga's topic name, as the relay sends
            await probe.wait_for(lambda: handler.applied == [good.event_id], "the good event")
            await eventually(
                lambda: _letters_of(ours, 1), "the refused event on our dead-letter topic"
            )
        finally:
            await runner.stop()

    (letter,) = await read_dead_letters(ours, ORDER_TOPIC)
    assert letter.event_id == str(bad.event_id)
    assert letter.original_topic == ours.named(ORDER_TOPIC)  # where a replay sends it
    sent = await read_topic(kafka_settings, ours.named(ORDER_TOPIC), 2)
    assert {record.value for record in sent} == {good.value, bad.value}
    assert await topic_size(kafka_settings, theirs.named(ORDER_TOPIC)) == 0
    assert await read_dead_letters(theirs, ORDER_TOPIC) == []


async def _letters_of(settings: KafkaSettings, count: int) -> bool:
    return len(await read_dead_letters(settings, ORDER_TOPIC)) == count

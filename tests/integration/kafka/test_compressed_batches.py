"""Record batches compressed by another producer (or by a topic's ``compression.type``) are
read: aiokafka reads lz4, snappy and zstd only with ``cramjam`` installed. Without it the
consumer cannot fetch such a batch at all; it stalls that partition (test_consumer_fetch_
failures), but the events stay unread until the codec is installed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from adapters_kafka import headers as h
from adapters_kafka.settings import KafkaSettings
from aiokafka import AIOKafkaProducer

from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import InboxHandler, Probe, order_event

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("codec", ["gzip", "lz4", "snappy", "zstd"])
async def test_a_batch_compressed_with_any_kafka_codec_is_applied(
    codec: str,
    kafka_settings: KafkaSettings,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic = await new_topic(f"compressed-{codec}", partitions=1)
    messages = [order_event(topic) for _ in range(5)]
    producer = AIOKafkaProducer(**kafka_settings.client_options(), compression_type=codec)
    await producer.start()
    try:
        batch = producer.create_batch()
        for message in messages:
            headers = h.encode_headers({h.EVENT_TYPE: message.event_type})
            assert batch.append(
                key=message.key.encode(), value=message.value, timestamp=None, headers=headers
            )
        batch.close()
        sent = await producer.send_batch(batch, topic, partition=0)
        await sent
    finally:
        await producer.stop()

    probe = Probe()
    handler = InboxHandler(probe)
    runner = await start_runner(handler, topic)
    await probe.wait_for(lambda: handler.applied_count == len(messages), f"{codec} records")
    assert sorted(e for ids in handler.applied.values() for e in ids) == sorted(
        m.event_id for m in messages
    )
    assert runner.ready

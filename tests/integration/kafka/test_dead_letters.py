"""Poison never blocks a partition: it lands on <topic>.DLT with its reason, and is committed."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from itertools import zip_longest
from pathlib import Path

import pytest
from adapters_kafka import headers as h
from adapters_kafka.dead_letters import read_dead_letters
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from core_saga.messages import EVENT_TYPES, Envelope, PoisonMessage, decode
from core_saga.ports import DomainError, OutboundMessage

from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import (
    Probe,
    RecordingHandler,
    committed_offset,
    eventually,
    read_topic,
)

pytestmark = pytest.mark.integration

KEY = b"0b9f6f3e-3a55-4a0e-9d39-7f1d2f8a6c11"  # one key: everything on one partition


class OutOfStock(DomainError):
    pass


def reason_of(raw: bytes) -> str:
    with pytest.raises(PoisonMessage) as caught:
        decode(raw)
    return caught.value.reason


async def test_poison_is_dead_lettered_while_the_partition_moves_on(
    contract_dir: Path,
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic = await new_topic("poison")
    poison = sorted((contract_dir / "poison").iterdir())
    seeds = {path.stem: path.read_bytes() for path in (contract_dir / "seed-events").iterdir()}
    rejected, crashing, unsubscribed = "OrderCancelled", "PaymentFailed", "StockReleased"

    def fail(envelope: Envelope) -> None:
        if envelope.event_type == rejected:
            raise OutOfStock("no stock left for this order")
        if envelope.event_type == crashing:
            raise ZeroDivisionError("a bug in the handler")

    probe = Probe()
    handler = RecordingHandler(probe, set(EVENT_TYPES) - {unsubscribed}, fail=fail)
    runner = await start_runner(handler, topic)

    # Each poison message is followed, on the same partition, by a valid one.
    pairs = zip_longest([path.read_bytes() for path in poison], [seeds[t] for t in sorted(seeds)])
    sent = [value for pair in pairs for value in pair if value is not None]
    for value in sent:
        await kafka_publisher.send(topic, value, key=KEY, headers=[])

    expected_applied = [
        decode(seed).event_id
        for event_type, seed in sorted(seeds.items())
        if event_type not in (rejected, crashing, unsubscribed)
    ]
    await probe.wait_for(
        lambda: handler.applied == expected_applied, "every valid message to be applied"
    )
    dead = await read_topic(kafka_settings, f"{topic}.DLT", len(poison) + 2)

    by_value = {record.value: record for record in dead}
    source = await read_topic(kafka_settings, topic, len(sent))
    for path in poison:
        record = by_value[path.read_bytes()]
        headers = h.decode_headers(record.headers)
        original = source[int(headers[h.DLT_ORIGINAL_OFFSET])]
        assert record.key == KEY
        assert original.value == record.value, path.name
        assert headers[h.DLT_ORIGINAL_TOPIC] == topic
        assert headers[h.DLT_ORIGINAL_PARTITION] == str(original.partition)
        assert headers[h.DLT_ERROR_MESSAGE] == reason_of(record.value), path.name
        assert headers[h.DLT_ERROR_TYPE].startswith("core_saga.messages.")
        assert headers[h.DLT_ATTEMPTS] == "1"  # decoding the same bytes again cannot help
        assert headers[h.DLT_CONSUMER_GROUP] == runner.group_id
        datetime.fromisoformat(headers[h.DLT_FIRST_FAILURE_AT])

    for event_type, error in ((rejected, "OutOfStock"), (crashing, "ZeroDivisionError")):
        headers = h.decode_headers(by_value[seeds[event_type]].headers)
        assert headers[h.DLT_ERROR_TYPE].endswith(error)
        assert headers[h.DLT_ATTEMPTS] == "3"
        assert handler.calls[decode(seeds[event_type]).event_id] == 3
    assert seeds[unsubscribed] not in by_value

    async def all_committed() -> bool:
        offset = await committed_offset(kafka_settings, runner.group_id, topic, source[0].partition)
        return offset == len(sent)

    await eventually(all_committed, f"the group to commit past all {len(sent)} records")
    assert runner.ready


async def test_dead_letters_sent_in_one_batch_are_all_read(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
) -> None:
    """The reader stops at the fetched high watermark: Tansu's ListOffsets would stop it
    after the first record of a batch of several."""
    topic = await new_topic("batched", partitions=2)
    ids = [uuid.uuid4() for _ in range(3)]
    await kafka_publisher.publish(  # one key, one partition: one record batch
        [OutboundMessage(i, f"{topic}.DLT", "order-1", "OrderCreated", b"{}") for i in ids]
    )

    letters = await read_dead_letters(kafka_settings, topic)

    assert [letter.headers[h.EVENT_ID] for letter in letters] == [str(i) for i in ids]
    assert [letter.offset for letter in letters] == [0, 1, 2]

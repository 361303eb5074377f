"""Records that wait are applied a batch at a time; a failing batch falls back to one by one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from uuid import UUID

import pytest
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from core_saga.messages import EVENT_TYPES, Envelope
from core_saga.ports import Around, DomainError

from tests.fixtures.kafka import unique_name
from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import (
    Probe,
    RecordingHandler,
    RecordingHooks,
    committed_offset,
    eventually,
    order_event,
    read_topic,
)

pytestmark = pytest.mark.integration

ORDER = UUID("0b9f6f3e-3a55-4a0e-9d39-7f1d2f8a6c11")  # one key: everything on one partition


class BatchRecordingHandler(RecordingHandler):
    """Also applies batches, all or nothing, as one transaction would."""

    def __init__(self, probe: Probe, fail: Callable[[Envelope], None] | None = None) -> None:
        super().__init__(probe, EVENT_TYPES, fail)
        self.batches: list[list[UUID]] = []

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        self.batches.append([envelope.event_id for envelope in envelopes])
        for envelope in envelopes:
            with around(envelope) if around else nullcontext():
                if self.fail is not None:
                    self.fail(envelope)  # before anything of the batch is kept
        self.applied.extend(envelope.event_id for envelope in envelopes)
        self.probe.changed()


async def test_waiting_records_are_applied_in_batches_in_offset_order(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic, group = await new_topic("batches"), unique_name("group")
    messages = [order_event(topic, ORDER) for _ in range(120)]
    await kafka_publisher.publish(messages)  # all waiting before the consumer starts
    probe = Probe()
    handler, hooks = BatchRecordingHandler(probe), RecordingHooks(probe)

    await start_runner(handler, topic, group, hooks=hooks, max_batch=50)
    await probe.wait_for(lambda: len(handler.applied) == len(messages), "every message")

    assert handler.applied == [message.event_id for message in messages]
    assert max(len(batch) for batch in handler.batches) == 50
    assert all(len(batch) <= 50 for batch in handler.batches)
    assert hooks.handled_count == len(messages)
    partition = (await read_topic(kafka_settings, topic, 1))[0].partition

    async def all_committed() -> bool:
        return await committed_offset(kafka_settings, group, topic, partition) == len(messages)

    await eventually(all_committed, "the last offset to be committed")


async def test_poison_in_a_batch_is_dead_lettered_alone_and_the_rest_applied_once(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
) -> None:
    topic = await new_topic("batch-poison")
    messages = [order_event(topic, ORDER) for _ in range(30)]
    poison = messages[12].event_id

    def fail(envelope: Envelope) -> None:
        if envelope.event_id == poison:
            raise DomainError("this order cannot be applied")

    await kafka_publisher.publish(messages)
    probe = Probe()
    handler = BatchRecordingHandler(probe, fail=fail)

    await start_runner(handler, topic)
    await probe.wait_for(lambda: len(handler.applied) == len(messages) - 1, "every good message")

    assert handler.applied == [m.event_id for m in messages if m.event_id != poison]
    assert any(poison in batch and len(batch) > 1 for batch in handler.batches)
    [dead] = await read_topic(kafka_settings, f"{topic}.DLT", 1)
    assert dead.value == messages[12].value

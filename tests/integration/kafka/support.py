"""Helpers for the Kafka integration tests: awaiting state, reading topics, test handlers."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from adapters_kafka.policy import ConsumerHooks
from adapters_kafka.settings import KafkaSettings
from aiokafka import AIOKafkaConsumer, TopicPartition
from core_saga.clock import SystemClock
from core_saga.memory.unit_of_work import MemoryDatabase, MemoryUnitOfWork
from core_saga.messages import EVENT_TYPES, Envelope, OrderConfirmed, encode
from core_saga.ports import OutboundMessage


class Probe:
    """Lets a test await a condition on state that handlers and hooks change."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool], what: str, within: float = 30) -> None:
        try:
            async with asyncio.timeout(within):
                while True:
                    self._changed.clear()  # before checking: a change from now on wakes us
                    if condition():
                        return
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"waited {within} s for {what}")


class RecordingHooks(ConsumerHooks):
    """Counts what a runner reports and wakes the probe."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.handled_count = 0
        self.partitions: frozenset[tuple[str, int]] = frozenset()

    def assigned(self, partitions: frozenset[tuple[str, int]]) -> None:
        self.partitions = partitions
        self.probe.changed()

    def handled(self, topic: str, event_type: str, seconds: float) -> None:
        self.handled_count += 1
        self.probe.changed()


class RecordingHandler:
    """Records what it applies; ``fail`` may raise for an envelope to simulate trouble."""

    def __init__(
        self,
        probe: Probe,
        subscriptions: Iterable[str] = EVENT_TYPES,
        fail: Callable[[Envelope], None] | None = None,
    ) -> None:
        self.subscriptions = frozenset(subscriptions)
        self.probe = probe
        self.fail = fail
        self.calls: Counter[UUID] = Counter()
        self.applied: list[UUID] = []

    async def handle(self, envelope: Envelope) -> None:
        self.calls[envelope.event_id] += 1
        self.probe.changed()
        if self.fail is not None:
            self.fail(envelope)
        self.applied.append(envelope.event_id)


class InboxHandler:
    """Applies each event once, as a service does: inbox row first, in one transaction."""

    subscriptions = frozenset(EVENT_TYPES)

    def __init__(
        self, probe: Probe, after_commit: Callable[[Envelope], Awaitable[None]] | None = None
    ) -> None:
        self.probe = probe
        self.after_commit = after_commit
        self.db = MemoryDatabase(SystemClock())
        self.deliveries: Counter[UUID] = Counter()
        self.applied: defaultdict[str, list[UUID]] = defaultdict(list)  # per key, in order

    @property
    def applied_count(self) -> int:
        return sum(len(ids) for ids in self.applied.values())

    async def handle(self, envelope: Envelope) -> None:
        self.deliveries[envelope.event_id] += 1
        async with MemoryUnitOfWork(self.db) as uow:
            fresh = await uow.inbox.mark_processed(envelope.event_id, envelope.event_type)
            await uow.commit()
        if fresh:
            self.applied[envelope.key].append(envelope.event_id)
        self.probe.changed()
        if self.after_commit is not None:
            await self.after_commit(envelope)


def order_event(topic: str, order_id: UUID | None = None) -> OutboundMessage:
    """A valid saga event for ``order_id`` (its key), sent to ``topic``."""
    envelope = Envelope(
        event_id=uuid4(),
        occurred_at=datetime.now(UTC),
        correlation_id=order_id or uuid4(),
        payload=OrderConfirmed(order_id=order_id or uuid4()),
    )
    return OutboundMessage(
        event_id=envelope.event_id,
        topic=topic,
        key=envelope.key,
        event_type=envelope.event_type,
        value=encode(envelope),
    )


async def read_topic(
    settings: KafkaSettings, topic: str, count: int, within: float = 20
) -> list[Any]:
    """The first ``count`` records of ``topic``, read outside any group, by partition order."""
    consumer = AIOKafkaConsumer(
        **settings.client_options(), enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    records: list[Any] = []
    try:
        await consumer.topics()  # loads the metadata partitions_for_topic reads
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(within):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=100)).values():
                    records.extend(batch)
    except TimeoutError:
        pytest.fail(f"{topic} holds {len(records)} records, expected {count}, after {within} s")
    finally:
        await consumer.stop()
    return records


async def topic_size(settings: KafkaSettings, topic: str) -> int:
    """How many records ``topic`` holds (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(**settings.client_options())
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def committed_offset(
    settings: KafkaSettings, group_id: str, topic: str, partition: int
) -> int:
    """The offset ``group_id`` committed on one partition (-1 when none), without joining."""
    consumer = AIOKafkaConsumer(
        **settings.client_options(), group_id=group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed = await consumer.committed(TopicPartition(topic, partition))
    finally:
        await consumer.stop()
    return -1 if committed is None else int(committed)


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], what: str, within: float = 20
) -> None:
    """Poll state that has no event to await (the broker's, a runner's) until ``check`` holds."""

    async def holds() -> bool:
        result = check()
        return await result if inspect.isawaitable(result) else result

    try:
        async with asyncio.timeout(within):
            while not await holds():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"waited {within} s for {what}")

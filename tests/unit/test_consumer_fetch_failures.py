"""The consumer runner when a fetch fails on one partition, and on a rebalance.

aiokafka's ``getmany`` takes each partition's fetched records in turn; at a partition whose
fetch failed (a record batch it cannot decode: a bad CRC, a codec it lacks) it raises and
drops what it took from the others, whose positions are already past it. The audit found
those records lost: never handed to a worker, their offsets committed once the next ones
finished. ``FakeConsumer`` does what aiokafka does there; no broker is involved.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import pytest
from adapters_kafka import consumer as consuming
from adapters_kafka import headers as h
from adapters_kafka.consumer import ConsumerRunner, _Rebalance
from adapters_kafka.policy import ConsumerHooks, RetryPolicy
from adapters_kafka.settings import KafkaSettings
from aiokafka import TopicPartition
from aiokafka.errors import CorruptRecordException, KafkaError
from aiokafka.structs import ConsumerRecord
from core_saga.handlers.exactly_once import new_envelope
from core_saga.memory import ManualClock
from core_saga.messages import Envelope, StockReleased, decode, encode
from core_saga.ports import Around

from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit

TOPIC = "inventory-events"
A, B = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


def record(tp: TopicPartition, offset: int) -> ConsumerRecord[Any, Any]:
    envelope = new_envelope(StockReleased(order_id=uuid4()), ManualClock().now(), None)
    headers = h.encode_headers({h.EVENT_TYPE: envelope.event_type})
    return consumer_record(
        tp.topic, encode(envelope), partition=tp.partition, offset=offset, headers=headers
    )


class FakeConsumer:
    """Partitions with fixed logs; a fetch of a ``broken`` one fails. ``getmany()`` of all
    partitions drains them in order and raises at a broken one, the drained records lost
    and their positions kept, as aiokafka's fetcher does."""

    def __init__(
        self,
        logs: dict[TopicPartition, int],
        broken: set[TopicPartition],
        committed: dict[TopicPartition, int] | None = None,
    ) -> None:
        self.logs = {tp: [record(tp, offset) for offset in range(n)] for tp, n in logs.items()}
        self.committed_offsets = committed or {}
        self.position = {tp: self.committed_offsets.get(tp, 0) for tp in logs}
        self.broken = broken
        self.failing: list[KafkaError] = []  # raised by the next getmany calls, before any
        self._paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self.position[tp] = 0

    async def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[Any, Any]]]:
        await asyncio.sleep(0.001)
        if self.failing:
            raise self.failing.pop(0)
        drained = {}
        for tp in partitions or sorted(self.logs):
            if tp in self._paused:
                continue
            if tp in self.broken:
                raise CorruptRecordException(f"Record for partition {tp} is corrupt")
            start = self.position[tp]
            taken = self.logs[tp][start : start + max_records]
            if taken:
                self.position[tp] = start + len(taken)
                drained[tp] = taken
        return drained

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


class Handler:
    subscriptions = frozenset({"StockReleased"})

    def __init__(self) -> None:
        self.applied: list[Envelope] = []
        self.hold: asyncio.Event | None = None

    async def handle(self, envelope: Envelope) -> None:
        await self.handle_batch([envelope])

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        if self.hold is not None:
            await self.hold.wait()
        self.applied.extend(envelopes)


class Failures(ConsumerHooks):
    def __init__(self) -> None:
        self.outages: list[str] = []

    def failed(self, topic: str, error: BaseException, *, infrastructure: bool) -> None:
        if infrastructure:
            self.outages.append(topic)


async def runner_on(
    fake: FakeConsumer, handler: Handler, *, assigned: bool = True, **options: Any
) -> tuple[ConsumerRunner, list[asyncio.Task[None]]]:
    """A runner given ``fake``'s partitions, fetching and committing on it as ``start()``
    would have it: the listener told of the assignment first, before the runner has the
    consumer, as aiokafka does on the first join (``assigned=False``: its committed
    offsets could not be read then)."""
    runner = ConsumerRunner(
        KafkaSettings("unused:9092"),
        "inventory-service",
        handler,
        publisher=None,  # type: ignore[arg-type]  # nothing is dead-lettered here
        topics=[TOPIC],
        retry=RetryPolicy(infrastructure_backoff=0.01),
        max_batch=2,
        **options,
    )
    if assigned:
        await _Rebalance(runner, fake).on_partitions_assigned(fake.assignment())
    runner._consumer = fake
    runner._running = True
    runner._tasks = [
        asyncio.create_task(runner._fetch()),
        asyncio.create_task(runner._commit_continuously()),
    ]
    return runner, runner._tasks


async def until(condition: Any) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def stop(tasks: list[asyncio.Task[None]], runner: ConsumerRunner) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for worker in runner._workers.values():
        worker.task.cancel()


async def test_a_partition_that_cannot_be_fetched_loses_no_record_of_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No retry while the stall is checked: with 0.2 s, a loaded machine saw B resumed (and
    # stalled again, logged twice) between the checks, which then failed.
    monkeypatch.setattr(consuming, "STALLED_RETRY", 60.0)
    fake = FakeConsumer({A: 6, B: 4}, broken={B})
    handler = Handler()
    hooks = Failures()
    with caplog.at_level(logging.ERROR, logger="adapters_kafka.consumer"):
        runner, tasks = await runner_on(fake, handler, hooks=hooks)
        try:
            await until(lambda: fake.commits and fake.commits[-1].get(A) == 6)
            applied = [e.event_id for e in handler.applied]
            assert applied == [_id(r) for r in fake.logs[A]]  # each once, in order
            assert B in fake.paused() and not runner.ready  # stalled, and said so
            assert runner.stalled == {B}  # consumer_stalled_partitions
            [stalled] = [r for r in caplog.records if "cannot fetch" in r.getMessage()]
            assert f"{TOPIC}[1] at offset" in stalled.getMessage()
            assert hooks.outages and hooks.outages[0] == TOPIC  # in the failures metric

            fake.broken.clear()  # the batch readable again (say, the codec installed)
            runner._stalled[B] = 0.0  # and its retry due now
            await until(lambda: fake.commits and fake.commits[-1].get(B) == 4)
            assert [e.event_id for e in handler.applied][6:] == [_id(r) for r in fake.logs[B]]
            await until(lambda: runner.ready)
            assert runner.stalled == frozenset()
        finally:
            await stop(tasks, runner)


def _id(rec: ConsumerRecord[Any, Any]) -> Any:
    return decode(rec.value).event_id


async def test_a_revoked_partition_gives_its_batch_half_the_rebalance_timeout() -> None:
    """Longer, and the group drops this member and hands its partitions on while it still
    works on them; the 10 s shutdown grace is more than a 6 s session timeout allows."""
    fake = FakeConsumer({A: 1}, broken=set())
    handler = Handler()
    handler.hold = asyncio.Event()  # the batch never ends on its own
    runner, tasks = await runner_on(fake, handler, consumer_options={"session_timeout_ms": 200})
    try:
        await until(lambda: A in runner._workers and runner._workers[A].task is not None)
        await asyncio.sleep(0.05)
        async with asyncio.timeout(5):  # with the shutdown grace it would take 10 s
            await _Rebalance(runner, fake).on_partitions_revoked({A})
        assert handler.applied == []  # abandoned uncommitted: delivered again elsewhere
        assert A not in runner._workers
    finally:
        await stop(tasks, runner)


async def test_a_partition_whose_committed_offset_was_not_read_is_rewound_to_it() -> None:
    """The listener could not read the committed offsets (or ran before the runner had the
    consumer, as on the first join): A's records were skipped, not rewound, on a failure."""
    fake = FakeConsumer({A: 6, B: 4}, broken={B}, committed={A: 2})
    handler = Handler()
    runner, tasks = await runner_on(fake, handler, assigned=False)
    try:
        await until(lambda: fake.commits and fake.commits[-1].get(A) == 6)
        assert [e.event_id for e in handler.applied] == [_id(r) for r in fake.logs[A][2:]]
    finally:
        await stop(tasks, runner)


async def test_an_error_of_no_partition_in_particular_stalls_none() -> None:
    """A coordinator's error concerns every partition alike: each is rewound, none paused."""
    fake = FakeConsumer({A: 3, B: 3}, broken=set())
    fake.failing = [KafkaError("the group coordinator went away") for _ in range(3)]
    handler = Handler()
    runner, tasks = await runner_on(fake, handler)
    try:
        await until(lambda: len(handler.applied) == 6)
        assert fake.paused() == set()
        await until(lambda: runner.ready)
    finally:
        await stop(tasks, runner)

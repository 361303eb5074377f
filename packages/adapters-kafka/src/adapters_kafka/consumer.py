"""ConsumerRunner: feeds one service's EventHandler from Kafka, at least once and in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    IllegalStateError,
    KafkaError,
    OffsetOutOfRangeError,
    TopicAuthorizationFailedError,
    UnsupportedCodecError,
)
from core_saga.messages import SAGA_TOPICS, TOPIC_OF
from core_saga.ports import BatchEventHandler, Clock, EventHandler

from adapters_kafka.delivery import Delivery
from adapters_kafka.policy import ConsumerHooks, InfrastructurePredicate, RetryPolicy
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

# Kafka's 500 ms default makes every hop on an idle topic wait that long on some brokers.
DEFAULT_CONSUMER_OPTIONS: Mapping[str, Any] = {"fetch_max_wait_ms": 50}
_POLL_TIMEOUT_MS = 100
STALLED_RETRY = 30.0
"""Seconds a partition whose fetch failed stays paused before it is fetched again."""
_PARTITION_ERRORS = (
    CorruptRecordException,
    UnsupportedCodecError,
    OffsetOutOfRangeError,
    TopicAuthorizationFailedError,
)
"""What ``getmany`` raises for one partition's fetch (others, a coordinator's say, concern
every partition alike: no reason to stall one)."""


class ConsumerRunner:
    """Runs ``handler`` for a consumer group: ordered per partition, concurrent across them.

    An offset is committed only once the handler returned for it and for everything before
    it in its partition (so after its transaction committed). A handler failing with a domain
    or unexpected error is tried ``retry.attempts`` times in all (the first try included),
    then the record is sent to ``<topic>.DLT`` with its key, value and headers naming where
    it came from and why, and committed. Records that do not decode (undecodable, invalid,
    unknown type) are dead-lettered at once: decoding the same bytes again cannot succeed;
    so are records whose ``eventType`` header disagrees with their envelope.
    Infrastructure failures (``is_transient`` or the ``is_infrastructure`` predicate) are
    never dead-lettered: the same message is retried with capped exponential backoff and
    ``ready`` is False until it succeeds.

    Event types outside ``handler.subscriptions`` that belong on the record's topic are
    skipped and committed, even broken ones that claim such a type: the services
    subscribing to them dead-letter them. A type of another saga topic is dead-lettered:
    no service reading this topic would apply it.

    On ``stop()`` the record in progress gets ``shutdown_grace`` seconds to finish, on a
    rebalance at most half the group's rebalance timeout (longer, and the group would drop
    this member and hand its partitions on while it still works on them), then is abandoned
    uncommitted (it will be delivered again); records fetched but not started are dropped.
    A partition holding ``max_buffered`` records is paused.

    A partition whose records cannot be fetched (a record batch the client cannot decode: a
    bad CRC, a compression codec it lacks) is paused, logged as an ERROR and tried again
    every ``STALLED_RETRY`` seconds, ``ready`` False meanwhile; the others go on, none of
    their records lost (``_fetch_apart``).

    ``group_id`` and ``topics`` (by default those of the handler's subscriptions) are the
    saga's names; the broker's are in ``settings.namespace``.

    A handler with ``handle_batch`` gets up to ``max_batch`` of a partition's waiting
    records in one transaction: batches form only when records wait, so a quiet partition
    still applies each record as it comes, and a busy one commits far less often.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        handler: EventHandler,
        *,
        publisher: KafkaPublisher,
        topics: Collection[str] | None = None,
        retry: RetryPolicy | None = None,
        is_infrastructure: InfrastructurePredicate | None = None,
        hooks: ConsumerHooks | None = None,
        clock: Clock | None = None,
        max_buffered: int = 500,
        max_batch: int = 50,
        shutdown_grace: float = 10.0,
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.group_id = group_id = settings.named(group_id)
        topics = topics or {TOPIC_OF[kind] for kind in handler.subscriptions}
        self.topics = sorted(settings.named(topic) for topic in topics)
        self._retry = retry or RetryPolicy()
        self._hooks = hooks or ConsumerHooks()
        self._delivery = Delivery(
            handler,
            publisher,
            group_id=group_id,
            retry=self._retry,
            is_infrastructure=is_infrastructure,
            hooks=self._hooks,
            now=clock.now if clock else lambda: datetime.now(UTC),
            outage=self._outage,
            saga_topic={settings.named(topic): topic for topic in SAGA_TOPICS}.get,
        )
        self._max_buffered = max_buffered
        self._max_batch = max(1, max_batch) if isinstance(handler, BatchEventHandler) else 1
        self._grace = shutdown_grace
        self._options: dict[str, Any] = {
            **settings.client_options(),
            **DEFAULT_CONSUMER_OPTIONS,
            **(consumer_options or {}),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
        }
        rebalance_ms = self._options.get("rebalance_timeout_ms") or self._options.get(
            "session_timeout_ms", 10_000
        )  # aiokafka's defaults: the rebalance timeout is the session timeout, 10 s
        self._revoke_grace = min(shutdown_grace, rebalance_ms / 2_000)
        self._consumer: Any = None
        self._workers: dict[TopicPartition, _PartitionWorker] = {}
        self._done: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._fed: dict[TopicPartition, int] = {}  # next offset to hand a worker
        self._stalled: dict[TopicPartition, float] = {}  # fetch failed: paused until (loop time)
        self._committed: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._struggling: set[TopicPartition] = set()  # backing off an infrastructure failure
        self._kafka_failing = False
        self._commit_lock = asyncio.Lock()
        self._commit_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._stopped = asyncio.Event()
        self._failure: BaseException | None = None
        self._stopping: asyncio.Future[None] | None = None

    @property
    def ready(self) -> bool:
        """Consuming, committing, and no message stuck behind an infrastructure failure."""
        return (
            self._running
            and not self._struggling
            and not self._stalled
            and not self._kafka_failing
            and all(not task.done() for task in self._tasks)
        )

    @property
    def stalled(self) -> frozenset[TopicPartition]:
        """The partitions paused because they cannot be fetched (``STALLED_RETRY``)."""
        return frozenset(self._stalled)

    @property
    def backlog(self) -> int:
        """Records fetched but not yet started, over all partitions (a gauge worth exporting)."""
        return sum(worker.backlog for worker in self._workers.values())

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the partition's end, per owned partition, as of the last fetch.

        Counted from the committed offset (what a restart would replay), so it includes
        records fetched or in flight but not yet applied.
        """
        if not self._running:
            return {}
        lags: dict[TopicPartition, int] = {}
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is not None:
                lags[tp] = max(0, end - self._committed.get(tp, 0))
        return lags

    async def start(self) -> None:
        """Join the group and start consuming in the background."""
        if self._running:
            return
        consumer = AIOKafkaConsumer(**self._options)  # needs the running loop: made here
        consumer.subscribe(self.topics, listener=_Rebalance(self, consumer))
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._stopped.clear()
        self._failure = None
        self._running = True
        self._tasks = [
            self._background(self._fetch(), "fetch"),
            self._background(self._commit_continuously(), "commit"),
        ]

    async def stop(self) -> None:
        """Finish or abandon in-flight records, commit what finished, leave the group."""
        if not self._running:
            if self._consumer is not None:  # another stop() is under way
                await self._stopped.wait()
            return
        self._running = False
        try:
            for task in self._tasks:
                task.cancel()
            await asyncio.wait(self._tasks)
            self._tasks = []
            await self._release(list(self._workers), self._grace)
            self._fed.clear()
            self._stalled.clear()
            await self._consumer.stop()
        finally:
            self._consumer = None
            self._stopped.set()

    async def run(self) -> None:
        """Start, then consume until ``stop()``; re-raise what ended consumption otherwise."""
        await self.start()
        await self._stopped.wait()
        if self._failure is not None:
            raise self._failure

    # --- fetching and committing -----------------------------------------------------------

    async def _fetch(self) -> None:
        while True:
            self._retry_stalled()
            try:
                batches = await self._consumer.getmany(
                    timeout_ms=_POLL_TIMEOUT_MS, max_records=self._max_buffered
                )
            except KafkaError as exc:
                self._kafka_failing = True
                log.warning("fetching for group %s failed, retrying: %r", self.group_id, exc)
                await self._fetch_apart(exc)
                await asyncio.sleep(self._retry.infrastructure_backoff)
                continue
            self._kafka_failing = False
            self._feed(batches)

    def _feed(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        for tp, records in batches.items():
            if not records:
                continue
            worker = self._workers.get(tp)
            if worker is None:
                worker = self._workers[tp] = _PartitionWorker(
                    tp, self._delivery.deliver_batch, self._finished, self._max_batch
                )
                worker.task.add_done_callback(self._on_task_done)
            worker.feed(records)
            self._fed[tp] = records[-1].offset + 1
            if worker.backlog >= self._max_buffered and tp not in self._paused:
                self._consumer.pause(tp)
                self._paused.add(tp)

    async def _fetch_apart(self, failure: KafkaError) -> None:
        """After ``getmany`` failed: aiokafka takes each partition's fetched records in turn
        and raises at a partition whose fetch failed, dropping what it took from the others
        (their positions already past it). So every owned partition goes back to the first
        record not yet handed to a worker; then, if the error is one partition's (its
        records unreadable, its topic denied), each is fetched on its own: the one that
        fails is stalled, the others' records are fed. A partition revoked meanwhile is
        passed over."""
        for tp in sorted(self._consumer.assignment()):
            with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                await self._rewind(tp)
        if not isinstance(failure, _PARTITION_ERRORS):
            return
        for tp in sorted(self._consumer.assignment() - self._consumer.paused()):
            try:
                batches = await self._consumer.getmany(
                    tp, timeout_ms=_POLL_TIMEOUT_MS, max_records=self._max_buffered
                )
            except IllegalStateError:
                continue  # revoked meanwhile
            except KafkaError as exc:
                if tp in self._consumer.assignment():
                    self._stall(tp, exc)
            else:
                self._feed(batches)

    async def _rewind(self, tp: TopicPartition) -> None:
        """Back to the first record of ``tp`` not handed to a worker: where the last one
        fed ends; for one not fed since it was assigned, where the group committed, else
        the partition's start."""
        if tp in self._fed:
            self._consumer.seek(tp, self._fed[tp])
            return
        with contextlib.suppress(KafkaError):  # committed unknown: left where it is
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    def _stall(self, tp: TopicPartition, exc: KafkaError) -> None:
        """Pause a partition that cannot be fetched: it would fail every fetch of the others."""
        self._consumer.pause(tp)
        self._stalled[tp] = asyncio.get_running_loop().time() + STALLED_RETRY
        self._hooks.failed(tp.topic, exc, infrastructure=True)  # counted as an outage is
        log.error(
            "group %s cannot fetch %s[%d] at offset %s, paused for %g s: %r",
            self.group_id,
            tp.topic,
            tp.partition,
            self._fed.get(tp, "the committed one"),
            STALLED_RETRY,
            exc,
        )

    def _retry_stalled(self) -> None:
        now = asyncio.get_running_loop().time()
        for tp, until in list(self._stalled.items()):
            if now >= until:
                del self._stalled[tp]
                if tp not in self._paused:
                    with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                        self._consumer.resume(tp)

    def _outage(self, record: Any) -> None:
        self._struggling.add(TopicPartition(record.topic, record.partition))

    def _finished(self, tp: TopicPartition, record: Any, backlog: int) -> None:
        self._done[tp] = record.offset + 1
        self._struggling.discard(tp)
        self._commit_wanted.set()
        if tp in self._paused and backlog <= self._max_buffered // 2:
            self._paused.discard(tp)
            if tp not in self._stalled:
                with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                    self._consumer.resume(tp)

    async def _commit_continuously(self) -> None:
        # Each commit carries everything finished while the previous one was in flight.
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            if not await self._commit():
                await asyncio.sleep(self._retry.infrastructure_backoff)
                self._commit_wanted.set()

    async def _commit(self, only: Collection[TopicPartition] | None = None) -> bool:
        async with self._commit_lock:
            offsets = {
                tp: offset
                for tp, offset in self._done.items()
                if offset > self._committed.get(tp, -1) and (only is None or tp in only)
            }
            if not offsets:
                return True
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on; whoever owns these partitions now starts from the last
                # commit, and the inbox absorbs what is delivered twice.
                log.info("offsets of group %s not committed: %r", self.group_id, exc)
                return True
            except KafkaError as exc:
                self._kafka_failing = True
                log.warning("committing offsets of group %s failed: %r", self.group_id, exc)
                return False
            self._kafka_failing = False
            self._committed.update(offsets)
            return True

    async def _load_committed(self, consumer: Any, partitions: Iterable[TopicPartition]) -> None:
        """The group's committed offsets of newly owned partitions: where ``lag`` counts from."""
        for tp in partitions:
            with contextlib.suppress(KafkaError):  # lag then counts from 0 until a commit
                self._committed[tp] = await consumer.committed(tp) or 0

    async def _release(self, partitions: Iterable[TopicPartition], grace: float) -> None:
        """Stop working on ``partitions`` (giving a batch in progress ``grace`` seconds) and
        commit what finished on them."""
        partitions = list(partitions)
        workers = [self._workers.pop(tp) for tp in partitions if tp in self._workers]
        await asyncio.gather(*(worker.close(grace) for worker in workers))
        await self._commit(partitions)
        for tp in partitions:
            self._done.pop(tp, None)
            self._committed.pop(tp, None)
            self._fed.pop(tp, None)
            self._stalled.pop(tp, None)
            self._paused.discard(tp)
            self._struggling.discard(tp)

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=f"{self.group_id} {name}")
        task.add_done_callback(self._on_task_done)
        return task

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A bug, not a message, ended a task: stop, so that ``run()`` raises it."""
        if task.cancelled() or task.exception() is None or not self._running:
            return
        self._failure = task.exception()
        log.error("consumer of group %s failed", self.group_id, exc_info=self._failure)
        self._stopping = asyncio.ensure_future(self.stop())


class _PartitionWorker:
    """Applies one partition's records in offset order, up to ``max_batch`` at a time."""

    def __init__(
        self,
        tp: TopicPartition,
        deliver: Callable[[Sequence[Any]], Awaitable[None]],
        finished: Callable[[TopicPartition, Any, int], None],
        max_batch: int,
    ) -> None:
        self._tp = tp
        self._deliver = deliver
        self._finished = finished
        self._max_batch = max_batch
        self._records: deque[Any] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self.task = asyncio.create_task(self._run(), name=f"consume {tp.topic}[{tp.partition}]")

    @property
    def backlog(self) -> int:
        return len(self._records)

    def feed(self, records: Iterable[Any]) -> None:
        self._records.extend(records)
        self._wakeup.set()

    async def close(self, grace: float) -> None:
        """Drop records not started; give the current batch ``grace`` seconds, else cancel it."""
        self._closing = True
        self._records.clear()
        self._wakeup.set()
        await asyncio.wait([self.task], timeout=grace)
        if not self.task.done():
            log.warning("abandoning the records in progress on %s", self._tp)
            self.task.cancel()
            await asyncio.wait([self.task])

    async def _run(self) -> None:
        while not self._closing:
            if not self._records:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [
                self._records.popleft() for _ in range(min(self._max_batch, len(self._records)))
            ]
            await self._deliver(batch)
            self._finished(self._tp, batch[-1], len(self._records))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Releases revoked partitions before the group reassigns them.

    It holds the consumer itself: on the first join aiokafka calls it before ``start()``
    returns, so before the runner has the consumer."""

    def __init__(self, runner: ConsumerRunner, consumer: Any) -> None:
        self._runner = runner
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runner._release(revoked, self._runner._revoke_grace)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("group %s: assigned %s", self._runner.group_id, sorted(assigned))
        await self._runner._load_committed(self._consumer, assigned)
        self._runner._hooks.assigned(frozenset(assigned))

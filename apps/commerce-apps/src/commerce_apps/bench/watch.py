"""Terminal times from ``order-events``: the order service's OrderConfirmed and OrderCancelled.

The order service writes those events in the transaction that makes the order terminal, and
the relay publishes them after it committed, so an order is terminal over HTTP before its
event can be read here: the time observed is never early. Reading the topic costs the
generator a fraction of a millisecond per order, where polling costs a GET every round for
every pending order, and on a shared 2-core machine the order service serves those GETs
with the same CPU the sagas need. The watcher reads every partition from its end without a
consumer group (no join to wait for, no offsets to commit).
"""

from __future__ import annotations

import asyncio
import logging
import time

from adapters_kafka.headers import EVENT_TYPE, decode_headers
from adapters_kafka.settings import KafkaSettings
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from core_saga.messages import ORDER_TOPIC, PoisonMessage, decode

log = logging.getLogger(__name__)
TERMINAL_EVENTS = {"OrderConfirmed": "CONFIRMED", "OrderCancelled": "CANCELLED"}
Outcome = tuple[float, str]  # (seconds since the run started, final status)


class EventWatcher:
    """Resolves each watched order with (observed time, status) when its terminal event comes."""

    verifies = True  # an event, not the API: each order's status is checked over HTTP after

    def __init__(self, kafka: KafkaSettings) -> None:
        self._consumer = AIOKafkaConsumer(
            **kafka.client_options(),
            group_id=None,
            enable_auto_commit=False,
            # Short: Tansu answers a waiting fetch only when it looks again (at half the
            # wait, then three quarters...), so the wait bounds how late an end is seen.
            fetch_max_wait_ms=10,
        )
        self._topic = kafka.named(ORDER_TOPIC)
        self.start = 0.0  # perf_counter() when the run started: times are relative to it
        self._pending: dict[str, asyncio.Future[Outcome]] = {}
        self._early: dict[str, Outcome] = {}  # not watched (yet): ended before its POST returned
        self.requests = 0  # no HTTP: the same field as the poller's

    async def open(self) -> None:
        """Connect and stand at the end of every partition, before the first order is placed."""
        await self._consumer.start()
        partitions = self._consumer.partitions_for_topic(self._topic)
        if not partitions:
            await self._consumer.stop()
            raise OSError(f"the broker has no topic {self._topic}")
        self._consumer.assign([TopicPartition(self._topic, p) for p in sorted(partitions)])
        await self._consumer.seek_to_end()

    async def close(self) -> None:
        """Stop reading; after the broker went away mid-run aiokafka's fetcher raises from
        its close (CancelledError, a connection error), which threw the run's results away."""
        try:
            await self._consumer.stop()
        except (asyncio.CancelledError, KafkaError, OSError) as exc:
            current = asyncio.current_task()
            if isinstance(exc, asyncio.CancelledError) and current and current.cancelling():
                raise  # this task was cancelled (Ctrl-C): not the fetcher's
            log.warning("the order-events reader did not stop cleanly: %r", exc)

    def watch(self, order_id: str) -> asyncio.Future[Outcome]:
        future = asyncio.get_running_loop().create_future()
        early = self._early.pop(order_id, None)
        if early is not None:
            future.set_result(early)
        else:
            self._pending[order_id] = future
        return future

    def forget(self, order_id: str) -> None:
        self._pending.pop(order_id, None)

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            observed = time.perf_counter() - self.start
            for records in batches.values():
                for record in records:
                    status = TERMINAL_EVENTS.get(decode_headers(record.headers).get(EVENT_TYPE, ""))
                    if status is not None and record.value is not None:
                        self._resolve(record.value, (observed, status))

    def _resolve(self, value: bytes, outcome: Outcome) -> None:
        try:
            order_id = str(decode(value).payload.order_id)
        except PoisonMessage:
            return  # not the platform's: the services dead-letter it
        future = self._pending.pop(order_id, None)
        if future is None:
            self._early[order_id] = outcome
        elif not future.done():
            future.set_result(outcome)

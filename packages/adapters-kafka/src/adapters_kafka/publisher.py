"""KafkaPublisher: the EventPublisher port on aiokafka, plus raw sends for dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from core_saga.ports import OutboundMessage, PublishError

from adapters_kafka.headers import EVENT_ID, EVENT_TYPE, RawHeaders, encode_headers
from adapters_kafka.partitioning import KeyPartitioner
from adapters_kafka.settings import KafkaSettings

_Record = tuple[str, bytes | None, bytes | None, RawHeaders]  # topic, key, value, headers


class KafkaPublisher:
    """Sends batches and waits for every acknowledgement (``acks="all"``).

    A batch is sent as a whole and may partly land before a failure: the caller retries the
    same messages and consumers' inboxes absorb the duplicates. The idempotent producer is
    off because some Kafka-protocol brokers (Tansu) do not support it.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        linger_ms: int = 0,
        max_batch_size: int = 512 * 1024,
        compression_type: str | None = None,
        ack_timeout: float = 30.0,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        self._ack_timeout = ack_timeout
        self._named = settings.named
        self._options: dict[str, Any] = {
            **settings.client_options(),
            "acks": "all",
            "enable_idempotence": False,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "compression_type": compression_type,
            **(producer_options or {}),
        }
        self._producer: Any = None
        self._partitioner = self._options.get("partitioner") or KeyPartitioner()

    async def start(self) -> None:
        """Connect; raises aiokafka's KafkaConnectionError when no broker answers."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._options)  # needs the running loop: made here
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Flush what is pending and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def ping(self, seconds: float = 2.0) -> bool:
        """Whether the broker answers a metadata request within ``seconds``."""
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(seconds):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        """Send all messages, keyed and headed; return once the broker acked each one."""
        await self._send_all(
            [
                (
                    self._named(message.topic),
                    message.key.encode(),
                    message.value,
                    encode_headers(
                        {
                            EVENT_TYPE: message.event_type,
                            EVENT_ID: str(message.event_id),
                            **message.headers,
                        }
                    ),
                )
                for message in messages
            ]
        )

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: RawHeaders
    ) -> None:
        """Send one record as given (dead letters keep the original bytes); wait for its ack.

        ``topic`` is the broker's name (a dead letter's original topic, a ``.DLT``), as is.
        """
        await self._send_all([(topic, key, value, headers)])

    async def _enqueue(self, records: Sequence[_Record]) -> list[asyncio.Future[Any]]:
        """Queue ``records`` as one record batch per partition; a future per batch.

        Partitioned here as the producer would (murmur2 of the key, as Java clients do), in
        order within each partition. One future per batch instead of one per record is most
        of what makes the relay fast.
        """
        producer = self._producer
        by_partition: dict[tuple[str, int], list[_Record]] = {}
        partitions: dict[str, list[int]] = {}
        for record in records:
            topic = record[0]
            if topic not in partitions:
                partitions[topic] = sorted(await producer.partitions_for(topic))
            partition = self._partitioner(record[1], partitions[topic], partitions[topic])
            by_partition.setdefault((topic, partition), []).append(record)
        acks: list[asyncio.Future[Any]] = []
        for (topic, partition), group in by_partition.items():
            batch = producer.create_batch()
            for _, key, value, headers in group:
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()  # that one was full: start the next
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                        raise KafkaError(f"a record of {len(value or b'')} bytes fits no batch")
            if batch.record_count():
                acks.append(await producer.send_batch(batch, topic, partition=partition))
        return acks

    async def _send_all(self, records: Sequence[_Record]) -> None:
        if self._producer is None:
            raise PublishError("the publisher is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._ack_timeout
        try:
            async with asyncio.timeout_at(deadline):  # enqueueing blocks while buffers are full
                acks = await self._enqueue(records)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise PublishError(f"could not send to the broker: {exc!r}") from exc
        if not acks:
            return
        # asyncio.wait, not gather: a timeout must not cancel aiokafka's own futures.
        done, pending = await asyncio.wait(acks, timeout=max(0.0, deadline - loop.time()))
        failures = [ack.exception() for ack in done if not ack.cancelled() and ack.exception()]
        for late in pending:  # failing later, unread, it would be logged as never retrieved
            late.add_done_callback(_read_outcome)
        if pending or failures:
            cause = failures[0] if failures else TimeoutError(f"no ack in {self._ack_timeout} s")
            raise PublishError(
                f"broker did not acknowledge {len(pending) + len(failures)} of {len(acks)} "
                f"record batches: {cause!r}"
            ) from cause


def _read_outcome(ack: asyncio.Future[Any]) -> None:
    """An acknowledgement given up on: its failure is known already (the batch is sent again)."""
    if not ack.cancelled():
        ack.exception()

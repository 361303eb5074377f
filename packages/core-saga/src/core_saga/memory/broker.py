"""An in-memory broker (topics of partitioned logs) and a publisher into it."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from core_saga.ports import OutboundMessage, PublishError


class MemoryBroker:
    """Append-only partitioned logs; a key always lands in the same partition."""

    def __init__(self, partitions: int = 3) -> None:
        if partitions < 1:
            raise ValueError("a topic has at least one partition")
        self.partitions = partitions
        self._logs: dict[str, list[list[OutboundMessage]]] = {}

    def partition_for(self, key: str) -> int:
        """A stable hash of the key (the same in every process, unlike ``hash``)."""
        return zlib.crc32(key.encode()) % self.partitions

    def append(self, message: OutboundMessage) -> tuple[int, int]:
        """Store ``message``; return its partition and offset."""
        partition = self.partition_for(message.key)
        log = self._partitions(message.topic)[partition]
        log.append(message)
        return partition, len(log) - 1

    def log(self, topic: str, partition: int) -> Sequence[OutboundMessage]:
        return self._partitions(topic)[partition]

    def topics(self) -> list[str]:
        return sorted(self._logs)

    def _partitions(self, topic: str) -> list[list[OutboundMessage]]:
        return self._logs.setdefault(topic, [[] for _ in range(self.partitions)])


class MemoryPublisher:
    """An ``EventPublisher`` into a ``MemoryBroker``; set ``down`` to refuse every batch."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker
        self.down = False
        self.published: list[OutboundMessage] = []

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        if self.down:
            raise PublishError("the broker is down")
        for message in messages:
            if self.broker is not None:
                self.broker.append(message)
            self.published.append(message)

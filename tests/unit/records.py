"""Kafka records as a consumer receives them, for tests that feed the consumer side."""

from __future__ import annotations

from typing import Any

from aiokafka.structs import ConsumerRecord


def consumer_record(
    topic: str,
    value: bytes | None,
    *,
    partition: int = 0,
    offset: int = 0,
    key: bytes = b"k",
    headers: list[tuple[str, bytes]] | None = None,
) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=0 if value is None else len(value),
        headers=headers or [],
    )

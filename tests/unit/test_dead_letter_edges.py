"""Dead letters at the edges: one the broker refuses as too large goes without its value
(rather than being retried as an outage that blocks the partition for good); replay leaves
such a letter out, and sends a record several groups dead-lettered back once.

Apache Kafka refuses records over ``message.max.bytes`` (1 MB by default); a poison record
just under it grows past it with the DLT's headers. The embedded broker has no such limit,
so a publisher that refuses like Kafka stands in for it here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from adapters_kafka import headers as h
from adapters_kafka.dead_letters import DeadLetter, replay
from adapters_kafka.delivery import Delivery
from adapters_kafka.policy import ConsumerHooks, RetryPolicy
from aiokafka.errors import MessageSizeTooLargeError
from core_saga.ports import PublishError

from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit

LIMIT = 1_000


class KafkaLikePublisher:
    """Refuses a record whose value and headers pass ``LIMIT`` bytes, as a broker would."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = []

    async def send(
        self, topic: str, value: bytes | None, *, key: bytes | None, headers: Any
    ) -> None:
        size = len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > LIMIT:
            cause = MessageSizeTooLargeError()
            raise PublishError(f"broker refused {size} bytes") from cause
        self.sent.append((topic, value, headers))


class NoHandler:
    subscriptions = frozenset({"OrderCreated"})

    async def handle(self, envelope: Any) -> None:
        raise AssertionError("poison never reaches the handler")


async def test_a_dead_letter_too_large_for_the_broker_goes_without_its_value() -> None:
    publisher = KafkaLikePublisher()
    outages: list[Any] = []
    delivery = Delivery(
        NoHandler(),  # type: ignore[arg-type]
        publisher,  # type: ignore[arg-type]
        group_id="inventory-service",
        retry=RetryPolicy(attempts=1, backoff=0.0),
        is_infrastructure=None,
        hooks=ConsumerHooks(),
        now=lambda: datetime(2026, 11, 30, tzinfo=UTC),
        outage=outages.append,
    )
    value = b"x" * (LIMIT - 100)  # fits the broker alone, not with the reasons
    record = consumer_record("order-events", value, offset=42, key=b"order-1")
    await delivery.deliver_batch([record])

    [(topic, sent, headers)] = publisher.sent
    assert (topic, sent) == ("order-events.DLT", None)
    named = h.decode_headers(headers)
    assert named[h.DLT_VALUE_DROPPED] == str(len(value))
    assert named[h.DLT_ORIGINAL_OFFSET] == "42"
    assert named[h.DLT_ERROR_MESSAGE].startswith("value is not JSON")
    assert outages == []  # never taken for an outage


async def test_a_letter_without_its_value_is_not_replayed() -> None:
    """Replayed, it would reach the consumers as an empty record."""
    kept = {h.DLT_ORIGINAL_TOPIC: "order-events", h.EVENT_ID: "kept"}
    dropped = {**kept, h.EVENT_ID: "dropped", h.DLT_VALUE_DROPPED: "1048000"}
    letters = [
        DeadLetter(0, 1, b"order-1", b"{}", h.encode_headers(kept)),
        DeadLetter(0, 2, b"order-2", None, h.encode_headers(dropped)),
    ]
    publisher = KafkaLikePublisher()
    assert await replay(letters, publisher) == 1  # type: ignore[arg-type]
    assert [(topic, value) for topic, value, _ in publisher.sent] == [("order-events", b"{}")]


async def test_a_record_three_groups_dead_lettered_goes_back_once() -> None:
    """Every group reads it again from the topic: one copy per group would multiply it."""
    origin = {h.DLT_ORIGINAL_TOPIC: "order-events", h.DLT_ORIGINAL_PARTITION: "0"}
    letters = [
        DeadLetter(0, n, b"k", b"not json", h.encode_headers({**origin, **more}))
        for n, more in enumerate(
            [
                {h.DLT_ORIGINAL_OFFSET: "7", h.DLT_CONSUMER_GROUP: "inventory-service"},
                {h.DLT_ORIGINAL_OFFSET: "7", h.DLT_CONSUMER_GROUP: "payment-service"},
                {h.DLT_ORIGINAL_OFFSET: "8", h.DLT_CONSUMER_GROUP: "payment-service"},
                {h.DLT_ORIGINAL_OFFSET: "7", h.DLT_CONSUMER_GROUP: "notification-service"},
            ]
        )
    ]
    publisher = KafkaLikePublisher()
    assert await replay(letters, publisher) == 2  # type: ignore[arg-type]
    assert len(publisher.sent) == 2

"""A record whose type belongs on another saga topic is dead-lettered, not skipped.

Every group skips the types it does not subscribe to, trusting that the services that do
will apply (or dead-letter) them. A type published to the wrong topic is read only by groups
that never subscribe to it: skipped by all, it was lost unread (a consumer audit found it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from adapters_kafka import headers as h
from adapters_kafka.delivery import Delivery
from adapters_kafka.policy import ConsumerHooks, RetryPolicy
from core_saga.handlers.exactly_once import new_envelope
from core_saga.messages import (
    INVENTORY_TOPIC,
    ORDER_TOPIC,
    Event,
    OrderConfirmed,
    PaymentFailed,
    StockReleased,
    encode,
)

from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str]]] = []

    async def send(self, topic: str, value: Any, *, key: Any, headers: Any) -> None:
        self.sent.append((topic, h.decode_headers(headers)))


class Skips(ConsumerHooks):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def skipped(self, topic: str, event_type: str) -> None:
        self.seen.append(event_type)


class InventoryLike:
    """Reads order-events for OrderConfirmed only (as the inventory reads it for three)."""

    subscriptions = frozenset({"OrderConfirmed"})

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def handle(self, envelope: Any) -> None:
        self.applied.append(envelope.event_type)


def on(topic: str, event: Event | None, header: str | None, value: bytes | None = None) -> Any:
    envelope = new_envelope(event, NOW, None) if event is not None else None
    headers = {} if header is None else {h.EVENT_TYPE: header}
    body = value if value is not None else encode(envelope)  # type: ignore[arg-type]
    return consumer_record(
        f"ns.{topic}", body, headers=h.encode_headers(headers) if headers else []
    )


def failed() -> PaymentFailed:
    return PaymentFailed(order_id=uuid4(), amount=Decimal("9.99"), reason="declined")


@pytest.mark.parametrize(
    ("name", "record", "fate"),
    [
        ("a payment event on order-events", on(ORDER_TOPIC, failed(), "PaymentFailed"), "dlt"),
        ("the same without a header", on(ORDER_TOPIC, failed(), None), "dlt"),
        (
            "broken, claiming a payment type, on order-events",
            on(ORDER_TOPIC, None, "PaymentFailed", b"[]"),
            "dlt",
        ),
        (
            "a type nobody subscribes to, on its own topic",
            on(INVENTORY_TOPIC, StockReleased(order_id=uuid4()), "StockReleased"),
            "skipped",
        ),
        ("ours", on(ORDER_TOPIC, OrderConfirmed(order_id=uuid4()), "OrderConfirmed"), "applied"),
    ],
)
async def test_a_type_is_skipped_only_on_its_own_topic(name: str, record: Any, fate: str) -> None:
    publisher, hooks, handler = Publisher(), Skips(), InventoryLike()
    delivery = Delivery(
        handler,  # type: ignore[arg-type]
        publisher,  # type: ignore[arg-type]
        group_id="ns.inventory-service",
        retry=RetryPolicy(attempts=1, backoff=0),
        is_infrastructure=None,
        hooks=hooks,
        now=lambda: NOW,
        outage=lambda record: None,
        saga_topic={f"ns.{t}": t for t in (ORDER_TOPIC, INVENTORY_TOPIC)}.get,
    )
    await delivery.deliver_batch([record])
    outcome = {
        "dlt": [t for t, _ in publisher.sent] == [f"{record.topic}.DLT"],
        "skipped": hooks.seen != [],
        "applied": handler.applied != [],
    }
    assert [k for k, happened in outcome.items() if happened] == [fate], name
    if fate == "dlt" and "header" not in name and "broken" not in name:
        reason = publisher.sent[0][1][h.DLT_ERROR_MESSAGE]
        assert reason.startswith("PaymentFailed belongs on payment-events, not order-events")

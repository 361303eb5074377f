"""A traced inventory applies a batch on its database: every statement of the batch's
transaction (locks, inbox, stock, outbox, commit) is a child of the batch's span, none a
root trace of its own; each event's span continues its message's trace, linked to the batch's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from adapters_kafka import headers as h
from adapters_kafka.delivery import Delivery
from adapters_kafka.policy import RetryPolicy
from adapters_postgres.uow import inventory_uow_factory
from aiokafka.structs import ConsumerRecord
from commerce_apps.metrics import ServiceMetrics
from commerce_apps.observing import ServiceHooks
from commerce_apps.tracing import PROPAGATOR, instrument_engine, trace_headers, tracer_provider
from core_saga.handlers.inventory import InventoryService
from core_saga.messages import Envelope, encode
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock
from tests.integration.postgres.test_inventory_concurrency import envelope, order_created

pytestmark = pytest.mark.integration

MONITOR = UUID("44444444-4444-4444-4444-444444444444")  # seeded with 30


@pytest.fixture
def engine(own_engine: Callable[[str], AsyncEngine]) -> AsyncEngine:
    return own_engine("inventory")


def record(sent: dict[str, str], event: Envelope, offset: int) -> ConsumerRecord[Any, Any]:
    value = encode(event)
    carrier = {**sent, h.EVENT_TYPE: event.event_type, h.EVENT_ID: str(event.event_id)}
    return ConsumerRecord(
        topic="order-events",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=event.key.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(event.key),
        serialized_value_size=len(value),
        headers=h.encode_headers(carrier),
    )


def traced_inventory(
    engine: AsyncEngine, clock: ManualClock
) -> tuple[TracerProvider, InMemorySpanExporter, Delivery]:
    """An inventory consumer traced into memory, its statements and outbox rows too."""
    exporter = InMemorySpanExporter()
    provider = tracer_provider("inventory", exporter)
    assert provider is not None
    instrument_engine(engine, provider)
    delivery = Delivery(
        InventoryService(uow=inventory_uow_factory(engine, trace_headers), clock=clock),
        None,  # type: ignore[arg-type]  # nothing to dead-letter
        group_id="inventory-service",
        retry=RetryPolicy(attempts=1, backoff=0.0),
        is_infrastructure=None,
        hooks=ServiceHooks(ServiceMetrics("inventory"), provider),
        now=lambda: datetime.now(UTC),
        outage=lambda record: None,
    )
    return provider, exporter, delivery


async def test_the_statements_of_a_batch_are_children_of_its_span(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    provider, exporter, delivery = traced_inventory(engine, clock)
    sender = provider.get_tracer("test").start_span("send order-events")  # never ends
    sent: dict[str, str] = {}
    PROPAGATOR.inject(sent, context=trace.set_span_in_context(sender))
    orders = [envelope(order_created([(MONITOR, 1)])) for _ in range(3)]

    await delivery.deliver_batch([record(sent, order, n) for n, order in enumerate(orders)])

    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert [(s.name, s.kind) for s in roots] == [("process order-events", SpanKind.CONSUMER)]
    [batch] = roots
    assert batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 3
    by_id = {s.context.span_id: s for s in spans if s.context is not None}

    def under_batch(span: ReadableSpan) -> bool:
        while span.parent is not None:
            span = by_id[span.parent.span_id]
        return span is batch

    statements = [str((s.attributes or {}).get("db.statement", "")) for s in spans]
    for sql in ("INSERT INTO processed_events", "UPDATE products", "INSERT INTO outbox"):
        assert any(sql in statement for statement in statements), sql
    assert all(under_batch(s) for s in spans if s.kind is SpanKind.CLIENT)
    events = [s for s in spans if s.kind is SpanKind.CONSUMER and s is not batch]
    assert len(events) == 3
    assert all(s.parent is not None and s.parent.span_id == sender.get_span_context().span_id
               and [link.context.span_id for link in s.links] == [batch.context.span_id]
               for s in events)  # fmt: skip

"""One order, one trace: spans from all four services, linked across every Kafka hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.e2e.platform import (
    MOUSE,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    order_body,
    running_platform,
)

pytestmark = pytest.mark.e2e
SERVICES = {"order-service", "inventory-service", "payment-service", "notification-service"}


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
async def traced(
    postgres_admin_url: str, exporter: InMemorySpanExporter
) -> AsyncIterator[RunningPlatform]:
    async with running_platform(
        postgres_admin_url,
        PAYMENTS_SUCCEED,
        span_exporter=exporter,
    ) as running:
        yield running


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


async def test_one_post_gives_one_trace_across_all_four_services(
    traced: RunningPlatform, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    created = (await traced.place(order_body((MOUSE, 1, "29.99")))).json()
    await traced.terminal(created["id"])
    await traced.settled(created["id"])

    server = [
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.SERVER and "POST" in s.name and service_of(s) == "order-service"
    ]
    assert len(server) == 1
    trace_id = server[0].context.trace_id
    async with asyncio.timeout(10):  # the inventory's StockReleased/commit spans end last
        while {
            service_of(s) for s in exporter.get_finished_spans() if s.context.trace_id == trace_id
        } != SERVICES:
            await asyncio.sleep(0.05)

    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in spans}
    consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
    hops = {(service_of(s), s.attributes["commerce.event_type"]) for s in consumers}
    assert {
        ("inventory-service", "OrderCreated"),
        ("payment-service", "StockReserved"),
        ("order-service", "StockReserved"),
        ("order-service", "PaymentSucceeded"),
        ("inventory-service", "OrderConfirmed"),
        ("notification-service", "OrderConfirmed"),
    } <= hops
    for span in consumers:
        # Each hop: the relay's send of the event, elsewhere, is the parent; the span that
        # wrote the event (a request or a consumed event) is the send's parent.
        assert span.parent is not None
        send = by_id[span.parent.span_id]
        assert send.kind is SpanKind.PRODUCER
        assert service_of(send) != service_of(span)
        assert send.name == f"send {span.attributes['messaging.destination.name']}"
        assert send.attributes is not None
        assert send.attributes["messaging.message.id"] == span.attributes["messaging.message.id"]
        assert send.parent is not None
        writer = by_id[send.parent.span_id]
        assert service_of(writer) == service_of(send)
        assert writer.kind in (SpanKind.SERVER, SpanKind.CONSUMER)
    statements = [
        s for s in spans if s.kind is SpanKind.CLIENT and service_of(s) == "inventory-service"
    ]
    assert statements, "no database spans inside the trace"
    described = [str(s.attributes.get("db.statement", "")) for s in statements]
    assert any("INSERT INTO processed_events" in sql for sql in described)  # sent on the driver
    assert any("INSERT INTO outbox" in sql for sql in described)

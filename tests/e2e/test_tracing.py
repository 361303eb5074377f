"""One order, one trace: spans from all four services, linked across every Kafka hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

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


def sent(spans: Sequence[ReadableSpan], service: str, event_types: set[str]) -> dict[str, int]:
    """The trace of each order's event of ``event_types`` the relay of ``service`` sent."""
    return {
        str(s.attributes["messaging.kafka.message.key"]): s.context.trace_id
        for s in spans
        if s.kind is SpanKind.PRODUCER
        and service_of(s) == service
        and s.attributes is not None
        and s.attributes.get("commerce.event_type") in event_types
    }


def posted_traces(spans: Sequence[ReadableSpan], placed: list[str]) -> dict[str, int]:
    """Each placed order's trace, from its OrderCreated: the trace of its POST."""
    posted = {s.context.trace_id for s in spans if s.kind is SpanKind.SERVER}
    created = sent(spans, "order-service", {"OrderCreated"})
    assert {created[order_id] for order_id in placed} <= posted
    return created


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
    hops_wanted = {
        ("inventory-service", "OrderCreated"),
        ("payment-service", "StockReserved"),
        ("order-service", "StockReserved"),
        ("order-service", "PaymentSucceeded"),
        ("inventory-service", "OrderConfirmed"),
        ("notification-service", "OrderConfirmed"),
    }

    def traced_spans() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]

    def hops() -> set[tuple[str, object]]:
        return {
            (service_of(s), s.attributes["commerce.event_type"])
            for s in traced_spans()
            if s.kind is SpanKind.CONSUMER and s.attributes is not None
        }

    # A consumer span ends after its handler's work past the commit (the notification
    # service sends, then records what it sent): its statements' spans end before it.
    async with asyncio.timeout(10):
        while {service_of(s) for s in traced_spans()} != SERVICES or not hops_wanted <= hops():
            await asyncio.sleep(0.05)

    spans = traced_spans()
    by_id = {s.context.span_id: s for s in spans}
    consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
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


async def test_a_backlog_is_applied_in_batch_spans_that_hold_its_statements(
    traced: RunningPlatform, exporter: InMemorySpanExporter
) -> None:
    """Orders queued behind a stopped inventory: its records wait, then go in batches, each
    one span over its transaction (the audit found hollow event spans of 0.03 ms and the
    inventory's writes as root traces of their own). Each event's span continues its
    order's trace, linked to the batch's, and so do the events it writes (a later audit: in
    a burst, most POST traces ended at the first ``send order-events``)."""
    await traced.platform.stop_service("inventory")
    exporter.clear()
    placed = [(await traced.place(order_body((MOUSE, 1, "29.99")))).json()["id"] for _ in range(20)]
    await traced.platform.start_service("inventory")
    for order_id in placed:
        await traced.terminal(order_id, seconds=30)

    every_span = exporter.get_finished_spans()
    created = posted_traces(every_span, placed)
    answered = sent(every_span, "inventory-service", {"StockReserved", "StockRejected"})
    split = [order_id for order_id in placed if answered[order_id] != created[order_id]]
    assert not split, f"{len(split)} of {len(placed)} orders' traces split at inventory's batch"

    spans = [s for s in every_span if service_of(s) == "inventory-service"]
    batches = [s for s in spans if "messaging.batch.message_count" in (s.attributes or {})]
    assert batches, "the backlog was not applied in batches"
    by_id = {s.context.span_id: s for s in every_span}
    for batch in batches:
        assert batch.kind is SpanKind.CONSUMER and batch.parent is None
        assert batch.attributes is not None
        count = batch.attributes["messaging.batch.message_count"]
        assert isinstance(count, int) and count > 1
        assert len(batch.links) == count  # to the relay's send of each message
        assert batch.context is not None
        linked = [batch.context.span_id]
        events = [
            s
            for s in spans
            if s.kind is SpanKind.CONSUMER and [link.context.span_id for link in s.links] == linked
        ]
        assert len(events) == count
        for event in events:  # a child of its message's send, in the order's trace
            assert event.parent is not None
            send = by_id[event.parent.span_id]
            assert (send.kind, service_of(send)) == (SpanKind.PRODUCER, "order-service")
    writes = [
        s
        for s in spans
        if s.kind is SpanKind.CLIENT
        and any(
            sql in str((s.attributes or {}).get("db.statement", ""))
            for sql in ("INSERT INTO processed_events", "UPDATE products", "INSERT INTO outbox")
        )
    ]
    assert writes
    roots = [s.name for s in writes if s.parent is None]
    assert not roots, f"writes in root traces of their own: {roots}"


async def test_a_payment_batch_records_its_outcomes_in_each_order_trace(
    traced: RunningPlatform, exporter: InMemorySpanExporter
) -> None:
    """Orders reserved behind a stopped payment service go in batches, whose gateway
    outcomes are recorded after the batch's commit, for all its payments in one transaction:
    their events carried the batch's trace (a later audit: 19 of 20 orders split there)."""
    await traced.platform.stop_service("payment")
    exporter.clear()
    placed = [(await traced.place(order_body((MOUSE, 1, "29.99")))).json()["id"] for _ in range(20)]
    async with asyncio.timeout(30):  # each reservation waits on payment-events' consumer
        for order_id in placed:
            while (await traced.order(order_id))["status"] != "STOCK_RESERVED":
                await asyncio.sleep(0.05)
    await traced.platform.start_service("payment")
    for order_id in placed:
        await traced.terminal(order_id, seconds=30)

    every_span = exporter.get_finished_spans()
    batches = [
        s
        for s in every_span
        if service_of(s) == "payment-service"
        and "messaging.batch.message_count" in (s.attributes or {})
    ]
    assert batches, "the payments were not applied in batches"
    created = posted_traces(every_span, placed)
    outcomes = sent(every_span, "payment-service", {"PaymentSucceeded", "PaymentFailed"})
    split = [order_id for order_id in placed if outcomes[order_id] != created[order_id]]
    assert not split, f"{len(split)} of {len(placed)} orders' traces split at payment's batch"

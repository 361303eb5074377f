"""The relay's producer spans: a child of the writer's context, carried on, failed on error."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from commerce_apps.tracing import PROPAGATOR, TracingPublisher
from core_saga.ports import OutboundMessage
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

pytestmark = pytest.mark.unit


class Recording:
    def __init__(self, error: Exception | None = None) -> None:
        self.sent: list[OutboundMessage] = []
        self.error = error

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        if self.error is not None:
            raise self.error
        self.sent.extend(messages)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def message(headers: dict[str, str]) -> OutboundMessage:
    return OutboundMessage(uuid.uuid4(), "order-events", "order-1", "OrderCreated", b"{}", headers)


async def test_each_message_is_sent_in_a_child_span_whose_context_it_carries(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("writer") as writer:
        written: dict[str, str] = {"eventType": "OrderCreated"}
        PROPAGATOR.inject(written)
    inner = Recording()
    await TracingPublisher(inner, tracer).publish([message(written), message({})])

    first, second = exporter.get_finished_spans()[1:]
    assert first.kind is SpanKind.PRODUCER and first.name == "send order-events"
    assert first.parent is not None
    assert first.parent.span_id == writer.get_span_context().span_id
    assert second.parent is None  # no trace context stored: a trace of its own
    carried = [trace.get_current_span(PROPAGATOR.extract(m.headers)) for m in inner.sent]
    assert [c.get_span_context().span_id for c in carried] == [
        first.context.span_id,
        second.context.span_id,
    ]
    assert inner.sent[0].headers["eventType"] == "OrderCreated"


async def test_a_failed_send_ends_its_spans_as_errors(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    publisher = TracingPublisher(
        Recording(ConnectionError("broker down")), provider.get_tracer("t")
    )
    with pytest.raises(ConnectionError):
        await publisher.publish([message({})])
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].name == "exception"

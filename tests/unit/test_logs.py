"""Handler log lines carry the service, trace id, order id and event id as JSON fields."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from commerce_apps.logs import ContextFilter, JsonFormatter
from commerce_apps.metrics import ServiceMetrics
from commerce_apps.observing import ServiceHooks
from commerce_apps.tracing import PROPAGATOR, tracer_provider
from core_saga.handlers.exactly_once import new_envelope
from core_saga.messages import StockReleased
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.unit


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, str]] = []
        self.setFormatter(JsonFormatter())
        self.addFilter(ContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_a_line_logged_while_handling_names_the_trace_order_and_event() -> None:
    provider = tracer_provider("inventory", InMemorySpanExporter())
    hooks = ServiceHooks(ServiceMetrics("inventory"), provider)
    envelope = new_envelope(StockReleased(order_id=uuid4()), datetime.now(UTC), None)
    assert provider is not None
    upstream = provider.get_tracer("test").start_span("upstream")
    headers: dict[str, str] = {}
    PROPAGATOR.inject(headers, context=trace.set_span_in_context(upstream))
    capture = Capture()
    log = logging.getLogger("test.handler")
    log.addHandler(capture)
    log.setLevel(logging.INFO)
    try:
        with hooks.handling("order-events", envelope, headers):
            log.info("released")
        log.info("outside")
    finally:
        log.removeHandler(capture)

    inside, outside = capture.lines
    assert inside["service"] == "inventory"
    assert inside["order_id"] == str(envelope.correlation_id)
    assert inside["event_id"] == str(envelope.event_id)
    assert inside["event_type"] == "StockReleased"
    assert inside["trace_id"] == format(upstream.get_span_context().trace_id, "032x")
    assert len(inside["span_id"]) == 16  # the consumer span, a child of ``upstream``
    assert inside["span_id"] != format(upstream.get_span_context().span_id, "016x")
    assert "order_id" not in outside and "trace_id" not in outside


def test_without_an_exporter_there_is_no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracer_provider("order") is None

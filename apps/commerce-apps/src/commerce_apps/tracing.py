"""OpenTelemetry: a tracer provider per service, and trace context across Kafka via headers.

Each service gets its own ``TracerProvider`` (four share one process under ``commerce up``,
each with its own ``service.name``). With no ``OTEL_EXPORTER_OTLP_*`` endpoint and no test
exporter there is no provider at all: the API's no-op tracer costs next to nothing.

The trace context travels with the event: the outbox row stores the W3C ``traceparent`` /
``tracestate`` current when the event was written (HTTP request or consumer span), the relay
sends them as Kafka headers, and the consumer continues the trace as a child of that span.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from adapters_postgres import raw
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine

PROPAGATOR = TraceContextTextMapPropagator()
OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracer_provider(service: str, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The service's provider, exporting by OTLP when configured and to ``exporter`` if given."""
    otlp = any(os.environ.get(name) for name in OTLP_VARIABLES)
    if not otlp and exporter is None:
        return None
    name = os.environ.get("OTEL_SERVICE_NAME") or f"{service}-service"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if otlp:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span; empty outside a trace."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """One span per SQL statement on this engine, from this service's provider: those
    SQLAlchemy sends, and the hot ones sent on its driver connections."""
    tracer = provider.get_tracer("commerce.sqlalchemy")
    usage = NoOpMeterProvider().get_meter("commerce").create_up_down_counter("db.connections")
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]
    database = engine.url.database or ""

    def statement_span(sql: str) -> AbstractContextManager[object]:
        """Named and described as the SQLAlchemy instrumentation names its spans."""
        return tracer.start_as_current_span(
            f"{sql.split(None, 1)[0]} {database}".strip(),
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.name": database, "db.statement": sql},
        )

    raw.watch_statements(engine, statement_span)


@contextmanager
def consumer_span(
    tracer: Tracer, topic: str, event_type: str, event_id: str, headers: Mapping[str, str]
) -> Iterator[None]:
    """Process one message as a child of the span that wrote it (messaging conventions)."""
    parent = PROPAGATOR.extract(dict(headers))
    with tracer.start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.message.id": event_id,
            "commerce.event_type": event_type,
        },
    ):
        yield


def current_trace_ids() -> tuple[str | None, str | None]:
    """Trace and span id of the current span, as hex (None, None outside a trace)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")

"""OpenTelemetry: a tracer provider per service, and trace context across Kafka via headers.

Each service gets its own ``TracerProvider`` (four share one process under ``commerce up``,
each with its own ``service.name``). With no ``OTEL_EXPORTER_OTLP_*`` endpoint and no test
exporter there is no provider at all: the API's no-op tracer costs next to nothing.

The trace context travels with the event: the outbox row stores the W3C ``traceparent`` /
``tracestate`` current when the event was written (HTTP request or consumer span). The relay
sends each message in a producer span, a child of that context, and the message's headers
carry the producer span's context, so the consumer's span is its child: a trace shows how
long each event waited in the outbox and for the broker's ack.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from adapters_postgres import raw
from core_saga.ports import EventPublisher, OutboundMessage
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
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


@dataclass
class TracingPublisher:
    """The relay's publisher with a PRODUCER span per message, from the send to the ack."""

    inner: EventPublisher
    tracer: Tracer
    destination: Callable[[str], str] = str  # a topic as the broker names it (namespaced)

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        spans = []
        sent = []
        for message in messages:
            topic = self.destination(message.topic)
            span = self.tracer.start_span(
                f"send {topic}",
                context=PROPAGATOR.extract(dict(message.headers)),
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": topic,
                    "messaging.message.id": str(message.event_id),
                    "messaging.kafka.message.key": message.key,
                    "commerce.event_type": message.event_type,
                },
            )
            headers = {k: v for k, v in message.headers.items() if k not in PROPAGATOR.fields}
            PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
            spans.append(span)
            sent.append(dataclasses.replace(message, headers=headers))
        try:
            await self.inner.publish(sent)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            for span in spans:
                span.end()


def traced_publisher(
    publisher: EventPublisher,
    provider: TracerProvider | None,
    destination: Callable[[str], str] = str,
) -> EventPublisher:
    """``publisher`` with producer spans when this service traces; itself otherwise.

    ``destination`` names a topic as the broker does (``KafkaSettings.named``), as the
    consumers' spans do from the records they get.
    """
    if provider is None:
        return publisher
    return TracingPublisher(publisher, provider.get_tracer("commerce.relay"), destination)


def current_trace_ids() -> tuple[str | None, str | None]:
    """Trace and span id of the current span, as hex (None, None outside a trace)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")

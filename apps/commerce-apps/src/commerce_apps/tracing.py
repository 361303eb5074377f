"""OpenTelemetry: a tracer provider per service, and trace context across Kafka via headers.

Each service gets its own ``TracerProvider`` (four share one process under ``commerce up``,
each with its own ``service.name``). With no ``OTEL_EXPORTER_OTLP_*`` endpoint and no test
exporter there is no provider at all: the API's no-op tracer costs next to nothing.

Spans go to the collector by OTLP over HTTP (``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``,
the default) or gRPC (``grpc``, when its exporter package is installed). An export gives up
after ``EXPORT_SECONDS`` unless ``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`` says otherwise, and the
app's lifespan stops the provider within ``SHUTDOWN_SECONDS`` (``shutdown``): a collector that
is down loses the last spans, it does not hold the exit.

Requests get one SERVER span each, named ``METHOD route`` (``http.spans.ServerSpans``);
probes and scrapes get none, nor do their statements. A periodic job's step is exported with
its statements only if it did something (``jobs.IdleJobFilter``).

The trace context travels with the event: the outbox row stores the W3C ``traceparent`` /
``tracestate`` current when the event was written (HTTP request, consumer span or a sweep
that cancelled orders). The relay sends each message in a producer span, a child of that
context, and the message's headers carry the producer span's context, so the consumer's span
is its child: a trace shows how long each event waited in the outbox and for the broker's ack.
In a batch too: the batch's span (its transaction) is a trace of its own, linked to each
message's, and each event's span, a child of its message's producer span, is current while its
effects are written, so the events it emits continue the order's trace (the payment outcomes
a batch records after its commit too: each carries the context its event had, ``Outbox.context``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from adapters_kafka import headers as headers_module
from adapters_postgres import raw
from core_saga.ports import EventPublisher, OutboundMessage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine

from commerce_apps.jobs import IdleJobFilter

log = logging.getLogger(__name__)

PROPAGATOR = TraceContextTextMapPropagator()
OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
TIMEOUT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
GRPC_EXPORTER = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
EXPORT_SECONDS = 3.0  # one export, retries included (the SDK's default: 10, and 30 at exit)
SHUTDOWN_SECONDS = 5.0  # the longest a stopping service waits for its last spans to go out

_BATCH: ContextVar[Span | None] = ContextVar("batch_span", default=None)  # see batch_span


def tracer_provider(
    service: str, exporter: SpanExporter | None = None, name: str | None = None
) -> TracerProvider | None:
    """The service's provider, exporting by OTLP when configured and to ``exporter`` if given;
    its ``service.name`` is ``name`` (``commerce run`` passes ``OTEL_SERVICE_NAME``: one service
    per process) or ``<service>-service``.

    An unusable ``OTEL_EXPORTER_OTLP_PROTOCOL`` fails here, at the service's start, in one line.
    """
    otlp = any(os.environ.get(name) for name in OTLP_VARIABLES)
    if not otlp and exporter is None:
        return None
    processors: list[SpanProcessor] = []
    if otlp:
        processors.append(BatchSpanProcessor(otlp_exporter()))
    if exporter is not None:
        processors.append(SimpleSpanProcessor(_Borrowed(exporter)))
    resource = Resource.create({"service.name": name or f"{service}-service"})
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(IdleJobFilter(processor))
    return provider


def otlp_exporter() -> SpanExporter:
    """The OTLP exporter ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` asks for, with a bounded
    timeout: ``EXPORT_SECONDS`` unless ``OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`` is set."""
    variable, protocol = next(
        ((name, value) for name in PROTOCOL_VARIABLES if (value := os.environ.get(name))),
        (PROTOCOL_VARIABLES[1], "http/protobuf"),
    )
    timeout = None if any(os.environ.get(name) for name in TIMEOUT_VARIABLES) else EXPORT_SECONDS
    protocol = protocol.strip().lower()
    if protocol == "http/protobuf":
        return OTLPSpanExporter(timeout=timeout)
    if protocol != "grpc":
        raise _start_error(f"{variable}={protocol} is not supported: use http/protobuf or grpc")
    try:
        grpc: Any = importlib.import_module(GRPC_EXPORTER)
    except ImportError:
        raise _start_error(
            f"{variable}=grpc needs the opentelemetry-exporter-otlp-proto-grpc package, which "
            f"is not installed: install it, or set {variable}=http/protobuf (port 4318)"
        ) from None
    exporter: SpanExporter = grpc.OTLPSpanExporter(timeout=timeout)
    return exporter


def _start_error(message: str) -> Exception:
    """A ``PlatformError``: ``commerce run`` and ``commerce up`` print it as one line."""
    from commerce_apps.platform import PlatformError  # platform imports this module

    return PlatformError(message)


async def shutdown(provider: TracerProvider, seconds: float = SHUTDOWN_SECONDS) -> bool:
    """Export the last spans and stop ``provider``, waiting at most ``seconds``.

    The SDK's own shutdown (at exit) waits up to 30 s per export against a collector that is
    down, longer than a container's stop grace. Here it runs in a daemon thread: when the
    time is up the service stops anyway (False), and the spans still queued are lost.
    """
    done = threading.Event()

    def stop() -> None:
        try:
            provider.shutdown()
        except Exception:
            log.exception("the tracer provider failed to shut down")
        finally:
            done.set()

    threading.Thread(target=stop, name="tracing-shutdown", daemon=True).start()
    if await asyncio.to_thread(done.wait, seconds):
        return True
    log.warning("the trace exporter did not finish within %.0f s: its last spans are lost", seconds)
    return False


@dataclass
class _Borrowed(SpanExporter):
    """A caller's exporter (the tests' in-memory one, shared by services): a provider that
    shuts down leaves it open for the others."""

    inner: SpanExporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export(spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


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
        """Named and described as the SQLAlchemy instrumentation names its spans; none where
        instrumentation is suppressed (probes), as that instrumentation does."""
        if not is_instrumentation_enabled():
            return nullcontext()
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
    """Process one message as a child of the span that wrote it (messaging conventions), so
    the events its handler writes to the outbox continue that trace.

    Inside a batch's span (``batch_span``) as well, with a link to the batch's span: the
    batch's transaction is shared, the order each event belongs to is not. A message that
    carried no trace context is the batch span's child instead.
    """
    sent = PROPAGATOR.extract(headers)
    batch = _BATCH.get()
    parent: Context | None = sent
    links: list[Link] = []
    if batch is not None:
        if trace.get_current_span(sent).get_span_context().is_valid:
            links = [Link(batch.get_span_context())]
        else:
            parent = None  # no trace to continue: the current span's, the batch's
    with tracer.start_as_current_span(
        f"process {topic}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.message.id": event_id,
            "commerce.event_type": event_type,
        },
    ):
        yield


@contextmanager
def batch_span(tracer: Tracer, topic: str, headers: Sequence[Mapping[str, str]]) -> Iterator[None]:
    """Process a batch of messages in one transaction: a span linked to the span that wrote
    each message (messaging conventions for batches), current while the batch runs, so the
    transaction's own statements (locks, inbox, commit) are its children. Each event's span
    (``consumer_span``) continues its message's trace instead, linked to this one."""
    with tracer.start_as_current_span(
        f"process {topic}",
        kind=SpanKind.CONSUMER,
        links=_links(PROPAGATOR.extract(carrier) for carrier in headers),
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.batch.message_count": len(headers),
        },
    ) as span:
        token = _BATCH.set(span)
        try:
            yield
        finally:
            _BATCH.reset(token)


@contextmanager
def dead_letter_span(
    tracer: Tracer,
    topic: str,
    headers: Mapping[str, str],
    event_id: str | None,
    error: BaseException,
) -> Iterator[None]:
    """Send a message to its dead-letter ``topic``: a PRODUCER span, a child of the span
    that wrote the message (when its headers say), with the failure's type."""
    attributes = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "error.type": headers_module.error_type(error),
    }
    if event_id is not None:
        attributes["messaging.message.id"] = event_id
    with tracer.start_as_current_span(
        f"send {topic}",
        context=PROPAGATOR.extract(headers),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    ) as span:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        yield


def failed_in_span(error: BaseException) -> None:
    """Mark the current span failed by ``error``, which its handler caught."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def _links(contexts: Iterable[Context]) -> list[Link]:
    """Links to the spans current in ``contexts`` (those extracted from headers), if any."""
    spans = (trace.get_current_span(context).get_span_context() for context in contexts)
    return [Link(span) for span in spans if span.is_valid]


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

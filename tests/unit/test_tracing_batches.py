"""An order's trace through a consumer's batch: each event's span continues its message's
trace, linked to the batch's span, so the events its handler writes continue it too.

The audit: in a burst of 10 orders, 6 of 11 POST traces ended at the first ``send
order-events``; the rest of each saga sat in batch root spans, since each event's span was
the batch's child and the outbox stored the batch's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import pytest
from adapters_kafka import headers as h
from commerce_apps.metrics import ServiceMetrics
from commerce_apps.observing import ServiceHooks
from commerce_apps.tracing import PROPAGATOR, trace_headers
from core_saga.messages import Envelope, encode
from core_saga.ports import Around
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.unit.records import consumer_record
from tests.unit.test_consumer_observability import (
    TOPIC,
    delivery,
    ids,
    released,
    traced,
    written_by,
)

pytestmark = pytest.mark.unit


class WritingHandler:
    """Handles a batch as ``apply_batch`` does, noting the trace context current while each
    event's effect runs: what the outbox stores with the events it writes
    (``PostgresOutbox.add``, through ``trace_headers``)."""

    subscriptions = frozenset({"StockReleased"})

    def __init__(self) -> None:
        self.written: dict[str, dict[str, str]] = {}  # event id: the context stored

    async def handle(self, envelope: Envelope) -> None:
        self.written[str(envelope.event_id)] = trace_headers()

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        for envelope in envelopes:
            with around(envelope) if around else nullcontext():
                await self.handle(envelope)


def parent_of(carrier: dict[str, str]) -> tuple[int, int]:
    """Trace and span id a ``traceparent`` names."""
    context = trace.get_current_span(PROPAGATOR.extract(carrier)).get_span_context()
    return context.trace_id, context.span_id


def split(spans: Sequence[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    [batch] = [s for s in spans if "messaging.batch.message_count" in (s.attributes or {})]
    events = [s for s in spans if "messaging.message.id" in (s.attributes or {})]
    return batch, events


async def test_each_event_of_a_batch_continues_the_trace_of_its_message() -> None:
    provider, exporter = traced()
    upstream = [provider.get_tracer("test").start_span(f"send {n}") for n in range(3)]
    envelopes = [released() for _ in upstream]
    records = [written_by(upstream[n], envelopes[n], n) for n in range(3)]
    handler = WritingHandler()

    await delivery(handler, ServiceHooks(ServiceMetrics("inventory"), provider)).deliver_batch(
        records
    )

    batch, events = split(exporter.get_finished_spans())
    assert batch.parent is None and batch.context is not None
    assert [ids(link.context) for link in batch.links] == [ids(s) for s in upstream]
    assert len(events) == 3
    for event, sender, envelope in zip(events, upstream, envelopes, strict=True):
        assert event.attributes is not None and event.context is not None
        assert event.attributes["messaging.message.id"] == str(envelope.event_id)
        assert (event.name, event.kind) == (f"process {TOPIC}", SpanKind.CONSUMER)
        assert event.parent is not None
        assert (event.parent.trace_id, event.parent.span_id) == ids(sender)
        assert [ids(link.context) for link in event.links] == [ids(batch.context)]
        # what the handler writes while applying the event continues the order's trace
        stored = handler.written[str(envelope.event_id)]
        assert parent_of(stored) == (event.context.trace_id, event.context.span_id)
        assert parent_of(stored)[0] == ids(sender)[0] != batch.context.trace_id


async def test_an_event_of_a_batch_whose_message_carried_no_trace_is_the_batch_child() -> None:
    provider, exporter = traced()
    sender = provider.get_tracer("test").start_span("send")
    traced_one, bare = released(), released()
    carrier = {h.EVENT_TYPE: bare.event_type, h.EVENT_ID: str(bare.event_id)}
    records = [
        written_by(sender, traced_one, 0),
        consumer_record(TOPIC, encode(bare), offset=1, headers=h.encode_headers(carrier)),
    ]
    handler = WritingHandler()

    await delivery(handler, ServiceHooks(ServiceMetrics("inventory"), provider)).deliver_batch(
        records
    )

    batch, events = split(exporter.get_finished_spans())
    assert batch.context is not None
    assert [ids(link.context) for link in batch.links] == [ids(sender)]
    by_message = {(s.attributes or {})["messaging.message.id"]: s for s in events}
    orphan = by_message[str(bare.event_id)]
    assert orphan.parent is not None and orphan.parent.span_id == batch.context.span_id
    assert list(orphan.links) == []
    assert parent_of(handler.written[str(bare.event_id)])[0] == batch.context.trace_id
    continued = by_message[str(traced_one.event_id)]
    assert continued.parent is not None and continued.parent.span_id == ids(sender)[1]


async def test_a_message_delivered_alone_is_its_writer_child_without_links() -> None:
    """Unchanged: one message at a time, the span is the producer span's child."""
    provider, exporter = traced()
    sender = provider.get_tracer("test").start_span("send")
    envelope = released()
    handler = WritingHandler()

    await delivery(handler, ServiceHooks(ServiceMetrics("inventory"), provider)).deliver_batch(
        [written_by(sender, envelope)]
    )

    [span] = exporter.get_finished_spans()
    assert span.parent is not None and span.context is not None
    assert (span.parent.trace_id, span.parent.span_id) == ids(sender)
    assert list(span.links) == []
    stored = handler.written[str(envelope.event_id)]
    assert parent_of(stored) == (span.context.trace_id, span.context.span_id)

"""A traced inventory applies a batch of orders on its database: the events it writes to
the outbox carry each order's own trace, not the batch's.

The audit: in a burst of 10 orders, 6 of 11 POST traces ended at the first ``send
order-events``; the rest of each saga sat in batch root spans (``messaging.batch.message_count``
2 to 7), since the outbox rows written in a batch stored the batch span's context.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from commerce_apps.tracing import (
    PROPAGATOR,
)
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock
from tests.integration.postgres.test_batch_spans import MONITOR, record, traced_inventory
from tests.integration.postgres.test_inventory_concurrency import envelope, order_created

pytestmark = pytest.mark.integration


def ids(context: SpanContext | None) -> tuple[int, int]:
    assert context is not None
    return context.trace_id, context.span_id


@pytest.fixture
def engine(own_engine: Callable[[str], AsyncEngine]) -> AsyncEngine:
    return own_engine("inventory")


async def test_the_events_a_batch_writes_continue_each_order_trace(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    provider, exporter, delivery = traced_inventory(engine, clock)
    orders = [envelope(order_created([(MONITOR, 1)])) for _ in range(3)]
    senders = []
    records = []
    for offset, order in enumerate(orders):  # each order sent in its own trace, as the relay does
        sender = provider.get_tracer("test").start_span("send order-events")
        sent: dict[str, str] = {}
        PROPAGATOR.inject(sent, context=trace.set_span_in_context(sender))
        sender.end()
        senders.append(sender.get_span_context())
        records.append(record(sent, order, offset))
    await delivery.deliver_batch(records)

    spans = exporter.get_finished_spans()
    [batch] = [s for s in spans if "messaging.batch.message_count" in (s.attributes or {})]
    assert batch.context is not None and batch.parent is None
    assert [ids(link.context) for link in batch.links] == [ids(s) for s in senders]
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT key, event_type, headers::text FROM outbox WHERE key = ANY(:keys)"),
                {"keys": [str(order.payload.order_id) for order in orders]},
            )
        ).all()
    written = {key: (event_type, json.loads(headers)) for key, event_type, headers in rows}
    assert len(written) == len(orders)
    for order, sent_by in zip(orders, senders, strict=True):
        event_type, headers = written[str(order.payload.order_id)]
        assert event_type == "StockReserved"
        stored = trace.get_current_span(PROPAGATOR.extract(headers)).get_span_context()
        assert stored.trace_id == sent_by.trace_id != batch.context.trace_id
        # the stored context is the event's span: a child of the order's send, linked to
        # the batch, and exported
        event = by_id[stored.span_id]
        assert event.kind is SpanKind.CONSUMER
        assert event.attributes is not None
        assert event.attributes["messaging.message.id"] == str(order.event_id)
        assert event.parent is not None and event.parent.span_id == sent_by.span_id
        assert [ids(link.context) for link in event.links] == [ids(batch.context)]
    # nothing of the batch is a root trace of its own but the batch's span
    roots = [s for s in spans if s.parent is None and s.name != "send order-events"]
    assert roots == [batch]

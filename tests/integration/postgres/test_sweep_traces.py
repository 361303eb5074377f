"""A traced payment sweep on its database, the gateway failing on one payment: the events it
committed for the others name spans that were exported, the sweep's trace among them.

The audit: the sweep's ``GatewayUnavailable`` is an outage, so its trace was dropped as an
idle step's, and the outcomes it had committed pointed to a parent never exported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from uuid import uuid4

import pytest
from adapters_postgres.uow import payment_uow_factory
from commerce_apps.jobs import is_infrastructure, run_job
from commerce_apps.tracing import PROPAGATOR, instrument_engine, trace_headers, tracer_provider
from core_saga.handlers.payment import GatewayUnavailable, PaymentService
from core_saga.memory import ManualClock
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.unit.test_payment_service import deliver, reserved
from tests.unit.test_sweep_traces import DownFor

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(own_engine: Callable[[str], AsyncEngine]) -> AsyncEngine:
    return own_engine("payment")


async def test_the_events_a_sweep_committed_before_an_outage_name_exported_spans(
    engine: AsyncEngine,
) -> None:
    exporter = InMemorySpanExporter()
    provider = tracer_provider("payment", exporter)
    assert provider is not None
    instrument_engine(engine, provider)
    clock, gateway = ManualClock(), DownFor()
    service = PaymentService(payment_uow_factory(engine, trace_headers), clock, gateway)
    stuck, *fine = orders = [uuid4() for _ in range(3)]
    gateway.down = True  # the consumer's calls fail: three payments left due
    for order_id in orders:
        await deliver(service, clock, reserved(order_id))
    gateway.down = False
    gateway.unreachable.add(stuck)
    exporter.clear()

    with pytest.raises(GatewayUnavailable):
        await run_job(
            provider.get_tracer("commerce.jobs"),
            "payment sweep",
            lambda: service.settle_stale(after=timedelta(0)),
            is_infrastructure,
        )

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT key, event_type, headers::text FROM outbox WHERE key = ANY(:keys)"),
                {"keys": [str(order_id) for order_id in orders]},
            )
        ).all()
    assert sorted((key, event_type) for key, event_type, _ in rows) == sorted(
        (str(order_id), "PaymentSucceeded") for order_id in fine
    )
    spans = exporter.get_finished_spans()
    exported = {s.context.span_id: s for s in spans if s.context is not None}
    parents = [
        trace.get_current_span(PROPAGATOR.extract(json.loads(headers))).get_span_context()
        for _, _, headers in rows
    ]
    assert all(parent.is_valid for parent in parents)
    missing = [parent for parent in parents if parent.span_id not in exported]
    assert not missing, f"{len(missing)} of {len(rows)} events name a span never exported"
    [sweep] = [s for s in spans if s.name == "payment sweep"]
    assert sweep.parent is None and sweep.context is not None
    assert {parent.trace_id for parent in parents} == {sweep.context.trace_id}

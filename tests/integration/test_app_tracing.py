"""A traced service on a real database: the spans it exports, and those it does not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from adapters_kafka.embedded import free_port
from commerce_apps.app import build_app
from commerce_apps.container import container_for
from commerce_apps.settings import Settings
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration


@dataclass
class Traced:
    http: httpx.AsyncClient
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())


@asynccontextmanager
async def traced_order_service(
    new_database: DatabaseFactory, **settings: Any
) -> AsyncIterator[Traced]:
    """The order service, started (its broker refuses: no consumer, no relay to Kafka)."""
    exporter = InMemorySpanExporter()
    container = container_for(
        "order",
        Settings(
            database_url=await new_database.create("order"),
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            **settings,
        ),
    )
    container.span_exporter.override(exporter)
    app = build_app(container)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http,
    ):
        yield Traced(http, exporter)


@pytest.fixture(scope="module")
async def service(new_database: DatabaseFactory) -> AsyncIterator[Traced]:
    async with traced_order_service(new_database) as traced:
        yield traced


async def test_a_request_is_one_server_span_named_after_its_route(service: Traced) -> None:
    service.exporter.clear()
    order_id = uuid.uuid4()
    assert (await service.http.get(f"/api/orders/{order_id}")).status_code == 404

    spans = service.spans()
    server = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in server] == ["GET /api/orders/{id}"]
    assert server[0].attributes is not None
    assert server[0].attributes["http.route"] == "/api/orders/{id}"
    assert not [s.name for s in spans if s.kind is SpanKind.INTERNAL]  # no http send/receive
    statements = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert statements, "the order's SELECT is not traced"
    assert all(s.parent is not None and s.context.trace_id == server[0].context.trace_id
               for s in statements)  # fmt: skip
    assert all(str(order_id) not in s.name for s in spans)


async def test_an_unknown_path_does_not_name_a_span(service: Traced) -> None:
    service.exporter.clear()
    path = f"/api/unknown/{uuid.uuid4()}"
    assert (await service.http.get(path)).status_code == 404

    spans = service.spans()
    assert [(s.name, s.kind) for s in spans] == [("GET", SpanKind.SERVER)]
    assert spans[0].attributes is not None
    assert "http.route" not in spans[0].attributes


async def test_probes_and_scrapes_are_not_traced_nor_their_statements(service: Traced) -> None:
    service.exporter.clear()
    for path in ("/metrics", "/health/live", "/health/ready"):
        await service.http.get(path)

    assert [s.name for s in service.spans()] == []


async def test_an_idle_service_exports_no_spans(new_database: DatabaseFactory) -> None:
    async with traced_order_service(new_database, deadline_sweep_interval=0.1) as traced:
        await asyncio.sleep(1.0)  # ten deadline sweeps, an outbox-age sample
        assert [s.name for s in traced.spans()] == []


async def test_a_sweep_that_cancelled_an_order_is_one_trace_with_its_statements(
    new_database: DatabaseFactory,
) -> None:
    async with traced_order_service(
        new_database, deadline_sweep_interval=0.1, saga_timeout=0.3
    ) as traced:
        body = {
            "customerId": str(uuid.uuid4()),
            "items": [{"productId": str(uuid.uuid4()), "quantity": 1, "unitPrice": 29.99}],
            "currency": "EUR",
        }
        placed = await traced.http.post(
            "/api/orders", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
        )
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["id"]  # (a loaded machine may cancel it before this returns)
        async with asyncio.timeout(10):
            while (await traced.http.get(f"/api/orders/{order_id}")).json()["status"] != (
                "CANCELLED"
            ):
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # more sweeps, idle ones

    sweeps = [s for s in traced.spans() if s.name == "deadline sweep"]
    assert len(sweeps) == 1 and sweeps[0].parent is None
    in_sweep = [s for s in traced.spans() if s.context.trace_id == sweeps[0].context.trace_id]
    described = [str((s.attributes or {}).get("db.statement", "")) for s in in_sweep]
    assert any("UPDATE orders" in sql for sql in described), described
    assert any("INSERT INTO outbox" in sql for sql in described), described

"""A service's Prometheus exposition: series start at 0, no ``_created``, the process once."""

from __future__ import annotations

import httpx
import pytest
from commerce_apps.http.middleware import RequestMetrics
from commerce_apps.metrics import ServiceMetrics
from commerce_apps.observing import ServiceHooks
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.unit


def exposition(metrics: ServiceMetrics) -> str:
    return generate_latest(metrics.registry).decode()


# What each service can count or observe, at 0 before its first event (DESIGN §3: who
# consumes what). ``increase()`` takes a series' first sample as its baseline: a series born
# at 1 hides its first event from the dashboard and the alerts.
STARTS_AT_ZERO = {
    "order": [
        'dead_letters_total{topic="inventory-events"} 0.0',
        'dead_letters_total{topic="payment-events"} 0.0',
        'event_batch_duration_seconds_count{topic="inventory-events"} 0.0',
        'event_batch_duration_seconds_count{topic="payment-events"} 0.0',
        'event_handler_duration_seconds_count{event_type="StockReserved",outcome="applied"} 0.0',
        'event_handler_duration_seconds_count{event_type="PaymentFailed",outcome="applied"} 0.0',
        'saga_duration_seconds_count{status="CONFIRMED"} 0.0',
        'saga_duration_seconds_count{status="CANCELLED"} 0.0',
    ],
    "inventory": [
        'dead_letters_total{topic="order-events"} 0.0',
        'event_batch_duration_seconds_count{topic="order-events"} 0.0',
        'event_handler_duration_seconds_count{event_type="OrderCreated",outcome="applied"} 0.0',
        'event_handler_duration_seconds_count{event_type="StockReleaseRequested",outcome="applied"} 0.0',  # noqa: E501
    ],
    "payment": [
        'dead_letters_total{topic="inventory-events"} 0.0',
        'dead_letters_total{topic="order-events"} 0.0',
        'event_batch_duration_seconds_count{topic="inventory-events"} 0.0',
        'event_batch_duration_seconds_count{topic="order-events"} 0.0',
        'payments_processed_total{outcome="success"} 0.0',
        'payments_processed_total{outcome="failure"} 0.0',
        'event_handler_duration_seconds_count{event_type="OrderCancelled",outcome="applied"} 0.0',
    ],
    "notification": [
        'dead_letters_total{topic="order-events"} 0.0',
        'event_batch_duration_seconds_count{topic="order-events"} 0.0',
        'event_handler_duration_seconds_count{event_type="OrderConfirmed",outcome="applied"} 0.0',
    ],
}


@pytest.mark.parametrize("service", sorted(STARTS_AT_ZERO))
def test_a_fresh_service_exports_its_labelled_series_at_zero(service: str) -> None:
    text = exposition(ServiceMetrics(service))
    expected = [
        *STARTS_AT_ZERO[service],
        'event_handler_failures_total{kind="infrastructure"} 0.0',
        'event_handler_failures_total{kind="poison"} 0.0',
    ]
    missing = [line for line in expected if line not in text.splitlines()]
    assert not missing, missing


def test_only_the_label_values_a_service_can_use_start_at_zero() -> None:
    text = exposition(ServiceMetrics("inventory"))
    assert "payments_processed_total{" not in text  # only the payment service charges
    assert "saga_duration_seconds_count{" not in text  # only the order service settles
    assert 'dead_letters_total{topic="payment-events"}' not in text  # not consumed here
    assert 'event_batch_duration_seconds_count{topic="payment-events"}' not in text
    assert "http_server_request_duration_seconds_count{" not in text  # open-ended labels
    assert "consumer_lag{" not in text


def test_dead_letters_start_at_zero_under_the_namespaced_topic() -> None:
    text = exposition(ServiceMetrics("notification", namespace="e2e-1."))
    assert 'dead_letters_total{topic="e2e-1.order-events"} 0.0' in text.splitlines()


def test_an_assigned_topic_starts_its_dead_letters_and_batch_durations_at_zero() -> None:
    metrics = ServiceMetrics("notification")
    ServiceHooks(metrics).assigned(frozenset({("ns.order-events", 0), ("ns.order-events", 1)}))
    lines = exposition(metrics).splitlines()
    assert 'dead_letters_total{topic="ns.order-events"} 0.0' in lines
    assert 'event_batch_duration_seconds_count{topic="ns.order-events"} 0.0' in lines


def test_the_first_dead_letter_moves_its_series_from_zero_to_one() -> None:
    metrics = ServiceMetrics("inventory")
    ServiceHooks(metrics).dead_lettered("order-events", ValueError("poison"))
    assert 'dead_letters_total{topic="order-events"} 1.0' in exposition(metrics).splitlines()


def test_no_created_series_in_either_exposition_format() -> None:
    metrics = ServiceMetrics("order")
    metrics.orders_created.inc()
    ServiceHooks(metrics).handled("inventory-events", "StockReserved", 0.01)
    text = exposition(metrics)
    openmetrics = generate_openmetrics(metrics.registry).decode()  # type: ignore[no-untyped-call]
    assert "orders_created_total 1.0" in text
    assert "_created" not in text.replace("orders_created_total", "")
    assert "_created" not in openmetrics.replace("orders_created", "")


def test_a_service_that_does_not_own_its_process_exports_no_process_metrics() -> None:
    """``commerce up --single-process`` (``Platform``) leaves them to one of the services."""
    assert "process_cpu_seconds_total" in exposition(ServiceMetrics("order"))
    assert "process_cpu_seconds_total" not in exposition(
        ServiceMetrics("order", process_metrics=False)
    )


async def test_requests_are_labelled_by_the_route_the_router_picks_never_the_raw_path() -> None:
    """A wrong method is labelled by its route (it was "unmatched", while its span named the
    route: two matchers); an unknown path is "unmatched"."""

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    metrics = ServiceMetrics("order")
    routes = [Route("/api/orders/{id}", ok, methods=["GET"])]
    app = Starlette(
        routes=routes, middleware=[Middleware(RequestMetrics, metrics=metrics, routes=routes)]
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        assert (await client.get("/api/orders/42")).status_code == 200
        assert (await client.delete("/api/orders/42")).status_code == 405
        assert (await client.get("/nowhere/42")).status_code == 404
        # Any token is a method to some servers (h11): one label value for all the others.
        assert (await client.request("X-MADE-UP", "/api/orders/42")).status_code == 405
    text = exposition(metrics)
    for method, route, status in (
        ("GET", "/api/orders/{id}", "200"),
        ("DELETE", "/api/orders/{id}", "405"),
        ("GET", "unmatched", "404"),
        ("_OTHER", "/api/orders/{id}", "405"),
    ):
        series = f'method="{method}",route="{route}",status="{status}"'
        assert f"http_server_request_duration_seconds_count{{{series}}} 1.0" in text
    assert "/42" not in text and "orders/4" not in text and "X-MADE-UP" not in text

"""The Grafana dashboards and the alert rules read only metrics the services export, and an
order feeds them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from commerce_apps.settings import SERVICES, ServiceName
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.platform import STAND, RunningPlatform, order_body
from tests.unit.test_alerts import alert_metric_names
from tests.unit.test_infra import dashboard_metric_names

pytestmark = pytest.mark.e2e

# The series names each exposition type produces (a family may have no sample yet: a labelled
# counter appears once a label set is used, yet the dashboard may already query it).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "info": ("_info",),
}


async def scrape(platform: RunningPlatform, service: ServiceName) -> list[Metric]:
    response = await platform.http.get(platform.url(service, "/metrics"))
    response.raise_for_status()
    return list(text_string_to_metric_families(response.text))


def series_names(families: Iterable[Metric]) -> set[str]:
    names: set[str] = set()
    for family in families:
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def value(families: Iterable[Metric], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


@pytest.fixture(scope="module")
async def one_order(succeeding: RunningPlatform) -> dict[str, object]:
    """One order placed and ended on the shared platform, with nothing of it left reserved."""
    response = await succeeding.place(order_body((STAND, 1, "24.90")))
    assert response.status_code == 201, response.text
    order = await succeeding.terminal(response.json()["id"])
    await succeeding.settled(str(order["id"]))
    return order


async def test_every_metric_the_dashboards_and_alerts_query_is_exported(
    succeeding: RunningPlatform, one_order: dict[str, object]
) -> None:
    queried = dashboard_metric_names()
    assert queried, "no PromQL found in infra/grafana/dashboards"
    exported: dict[str, set[str]] = {
        service: series_names(await scrape(succeeding, service)) for service in SERVICES
    }
    everywhere = set().union(*exported.values())
    missing = sorted(queried - everywhere)
    assert not missing, f"queried by the dashboards, exported by no service: {missing}"
    owners = [s for s, names in exported.items() if "process_cpu_seconds_total" in names]
    assert len(owners) == 1, f"services sharing one process, each exporting it: {owners}"
    unknown = sorted(alert_metric_names() - everywhere)
    assert not unknown, f"read by infra/prometheus/alerts.yml, exported by no service: {unknown}"


async def test_an_order_feeds_the_http_saga_outbox_and_handler_panels(
    succeeding: RunningPlatform, one_order: dict[str, object]
) -> None:
    status = str(one_order["status"])
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # counters follow commits and broker acks, a moment after the HTTP answer
        order = await scrape(succeeding, "order")
        inventory = await scrape(succeeding, "inventory")
        fed = {
            "POST /api/orders 201": value(
                order,
                "http_server_request_duration_seconds_count",
                method="POST",
                route="/api/orders",
                status="201",
            ),
            "orders_created_total": value(order, "orders_created_total"),
            f"saga_duration_seconds_count{{status={status}}}": value(
                order, "saga_duration_seconds_count", status=status
            ),
            "outbox_published_total": value(order, "outbox_published_total"),
            "inventory handled OrderCreated": value(
                inventory, "event_handler_duration_seconds_count", event_type="OrderCreated"
            ),
        }
        if all(fed.values()) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert all(count >= 1 for count in fed.values()), fed

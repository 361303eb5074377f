"""The routes every service has: readiness from its checks, metrics as a scraper asks."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from commerce_apps.http import health
from commerce_apps.http.health import health_routes
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette

pytestmark = pytest.mark.unit


async def up() -> bool:
    return True


async def down() -> bool:
    return False


async def broken() -> bool:
    raise ConnectionError("refused")


def client(checks: dict[str, object]) -> httpx.AsyncClient:
    registry = CollectorRegistry()
    Counter("orders_created", "Orders created", registry=registry).inc(3)
    app = Starlette(routes=health_routes(checks, registry))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")


async def test_readiness_is_503_naming_each_check_that_is_down() -> None:
    async with client({"database": up, "broker": down, "migrations": broken}) as http:
        response = await http.get("/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "status": "DOWN",
        "checks": {"database": "UP", "broker": "DOWN", "migrations": "DOWN: ConnectionError"},
    }


async def test_a_check_that_hangs_is_down_within_the_check_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database check waiting on an exhausted pool held the probe for the pool's 30 s."""

    async def hangs() -> bool:
        await asyncio.sleep(3600)
        return True

    monkeypatch.setattr(health, "CHECK_SECONDS", 0.05)
    async with client({"database": hangs, "broker": up}) as http, asyncio.timeout(5):
        response = await http.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "DOWN: TimeoutError", "broker": "UP"}


async def test_metrics_are_prometheus_text_by_default() -> None:
    async with client({}) as http:
        response = await http.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "orders_created_total 3.0" in response.text


async def test_metrics_speak_openmetrics_and_gzip_to_a_scraper_that_asks() -> None:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"}
    async with client({}) as http:
        response = await http.get("/metrics", headers=headers)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.headers["content-encoding"] == "gzip"
    assert response.text.rstrip().endswith("# EOF")  # httpx has unzipped it


async def test_metrics_answer_only_get() -> None:
    async with client({}) as http:
        assert (await http.post("/metrics")).status_code == 405

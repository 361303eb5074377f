"""Every 4xx of the HTTP contract as problem+json, and the endpoints every service has."""

from __future__ import annotations

import json
import uuid

import pytest
from commerce_apps.settings import ServiceName

from tests.e2e.platform import MOUSE, RunningPlatform, order_body

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


async def _post(
    running: RunningPlatform, content: bytes, content_type: str, key: str = "k"
) -> dict:
    response = await running.http.post(
        running.url("order", "/api/orders"),
        content=content,
        headers={"Content-Type": content_type, "Idempotency-Key": key},
    )
    assert response.headers["content-type"] == PROBLEM, response.text
    problem = response.json()
    assert problem["status"] == response.status_code
    assert {"type", "title", "status"} <= problem.keys()
    return problem


async def test_client_errors_are_problem_documents(succeeding: RunningPlatform) -> None:
    valid = json.dumps(order_body((MOUSE, 1, "1.00"))).encode()
    assert (await _post(succeeding, valid, "text/plain"))["status"] == 415
    assert (await _post(succeeding, b"{" + b" " * 70_000 + b"}", "application/json"))[
        "status"
    ] == 413
    assert (await _post(succeeding, b'{"customerId": ', "application/json"))["status"] == 400
    assert (await _post(succeeding, valid, "application/json", key="x" * 256))["status"] == 400
    assert (await _post(succeeding, valid, "application/json", key="bad\tkey"))["status"] == 400


async def test_an_invalid_body_names_each_field(succeeding: RunningPlatform) -> None:
    body = {
        "customerId": "not-a-uuid",
        "items": [{"productId": MOUSE, "quantity": 0, "unitPrice": 1.001}],
        "currency": "eur",
    }
    problem = await _post(succeeding, json.dumps(body).encode(), "application/json")
    assert problem["status"] == 422
    fields = {error["field"] for error in problem["errors"]}
    assert {"customerId", "items.0.quantity", "items.0.unitPrice", "currency"} <= fields
    empty = await _post(
        succeeding,
        b'{"customerId": "%s", "items": []}' % str(uuid.uuid4()).encode(),
        "application/json",
    )
    assert {e["field"] for e in empty["errors"]} == {"items"}


async def test_unknown_things_are_404(succeeding: RunningPlatform) -> None:
    for path in (
        f"/api/orders/{uuid.uuid4()}",
        "/api/orders/not-a-uuid",
        f"/api/orders/{uuid.uuid4()}/history",
    ):
        response = await succeeding.http.get(succeeding.url("order", path))
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
    missing = await succeeding.http.get(
        succeeding.url("inventory", f"/api/products/{uuid.uuid4()}")
    )
    assert missing.status_code == 404
    bad_query = await succeeding.http.get(succeeding.url("payment", "/api/payments?orderId=nope"))
    assert bad_query.status_code == 400
    assert bad_query.headers["content-type"] == PROBLEM


async def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(
    succeeding: RunningPlatform,
) -> None:
    """Starlette redirected ``/api/orders/`` to an absolute URL built from the Host header."""
    for path in ("/api/orders/", "/health/live/", f"/api/orders/{uuid.uuid4()}/"):
        response = await succeeding.http.get(
            succeeding.url("order", path), headers={"Host": "evil.example"}
        )
        assert response.status_code == 404, path
        assert response.headers["content-type"] == PROBLEM
        assert "location" not in response.headers


@pytest.mark.parametrize("service", ["order", "inventory", "payment", "notification"])
async def test_every_service_has_health_metrics_and_docs(
    succeeding: RunningPlatform, service: str
) -> None:
    http = succeeding.http
    if service == "order":
        placed = (await succeeding.place(order_body((MOUSE, 1, "1.00")))).json()
        await succeeding.terminal(placed["id"])
    assert (await http.get(succeeding.url(service, "/health/live"))).json()["status"] == "UP"
    ready = await http.get(succeeding.url(service, "/health/ready"))
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "UP", "migrations": "UP", "broker": "UP"}
    metrics = await http.get(succeeding.url(service, "/metrics"))
    assert "http_server_request_duration_seconds" in metrics.text
    assert "outbox_published_total" in metrics.text
    if service == "order":
        assert "orders_created_total" in metrics.text
        assert 'saga_duration_seconds_count{status="CONFIRMED"}' in metrics.text
    document = (await http.get(succeeding.url(service, "/openapi.json"))).json()
    assert document["openapi"].startswith("3.1")
    assert any(path.startswith("/api/") for path in document["paths"])
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert all("503" in op["responses"] for op in operations)  # a database may be down
    docs = await http.get(succeeding.url(service, "/docs"))
    assert "swagger-ui" in docs.text and "cdn" not in docs.text.lower()
    init = await http.get(succeeding.url(service, "/docs/init.js"))
    assert "validatorUrl: null" in init.text  # nor validator.swagger.io
    asset = await http.get(succeeding.url(service, "/docs/assets/swagger-ui-bundle.js"))
    assert asset.status_code == 200 and len(asset.content) > 100_000


@pytest.mark.parametrize(
    ("service", "path"), [("payment", "/api/payments"), ("notification", "/api/notifications")]
)
async def test_a_list_pages_back_along_link_next(
    succeeding: RunningPlatform, service: ServiceName, path: str
) -> None:
    """Over PostgreSQL and HTTP: following ``Link: rel="next"`` reads every row once, in list
    order, and stops at a page without one; a cursor no link gave is a 400 naming ``before``."""
    for _ in range(3):
        placed = (await succeeding.place(order_body((MOUSE, 1, "1.00")))).json()
        await succeeding.settled(placed["id"])
    one_page = (await succeeding.http.get(succeeding.url(service, f"{path}?limit=1000"))).json()
    everything = [row["id"] for row in one_page]
    assert len(everything) < 1000  # one page holds them all: the reference needs no link
    paged = [row["id"] for row in await succeeding.listed(service, path, limit=2)]
    assert len(paged) == len(set(paged)) >= len(everything) >= 3  # none repeated
    assert [row for row in paged if row in set(everything)] == everything  # none skipped
    bad = await succeeding.http.get(succeeding.url(service, f"{path}?before=nope"))
    assert (bad.status_code, bad.headers["content-type"]) == (400, PROBLEM)
    assert [error["field"] for error in bad.json()["errors"]] == ["before"]

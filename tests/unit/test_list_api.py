"""GET /api/payments and /api/notifications: bounded by ``limit``, over the in-memory databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from commerce_apps.http.docs import openapi_document
from commerce_apps.http.problems import EXCEPTION_HANDLERS, PROBLEM_JSON
from commerce_apps.services import notification, payment
from core_saga.memory import ManualClock, MemoryNotificationDatabase, MemoryPaymentDatabase
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from tests.contract.builders import new_notification, new_payment

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class ListApi:
    path: str
    client: httpx.AsyncClient
    store: Callable[[int], Awaitable[list[UUID]]]
    """Stores that many rows a second apart; their ids, oldest first."""


@dataclass(frozen=True)
class Listed:
    """A list route and what it lists: its in-memory database, a row builder, the repository."""

    database: Callable[[ManualClock], Any]
    build: Callable[[datetime], Any]
    repository: str
    routes: Callable[[Any], list[BaseRoute]]


APIS = {
    "/api/payments": Listed(MemoryPaymentDatabase, new_payment, "payments", payment.payment_routes),
    "/api/notifications": Listed(
        MemoryNotificationDatabase,
        new_notification,
        "notifications",
        notification.notification_routes,
    ),
}


@pytest.fixture(params=sorted(APIS))
async def api(request: pytest.FixtureRequest) -> AsyncIterator[ListApi]:
    listed, clock = APIS[request.param], ManualClock()
    db = listed.database(clock)

    async def store(count: int) -> list[UUID]:
        rows = [listed.build(clock.advance(timedelta(seconds=1))) for _ in range(count)]
        async with db.unit_of_work() as uow:
            for row in rows:
                await getattr(uow, listed.repository).add(row)
            await uow.commit()
        return [row.id for row in rows]

    app = Starlette(routes=listed.routes(db.unit_of_work), exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield ListApi(request.param, client, store)


async def ids(api: ListApi, query: str = "") -> list[UUID]:
    response = await api.client.get(api.path + query)
    assert response.status_code == 200, response.text
    return [UUID(row["id"]) for row in response.json()]


async def test_without_a_limit_the_newest_hundred_come_oldest_first(api: ListApi) -> None:
    stored = await api.store(101)
    assert await ids(api) == stored[1:]
    assert await ids(api, "?limit=") == stored[1:]  # empty, as an empty orderId: not given


async def test_an_explicit_limit_keeps_the_newest_rows_oldest_first(api: ListApi) -> None:
    stored = await api.store(3)
    assert await ids(api, "?limit=2") == stored[1:]
    assert await ids(api, "?limit=1000") == stored


async def test_a_limit_with_an_order_id_is_accepted_and_finds_the_orders_row(
    api: ListApi,
) -> None:
    """An order has one payment or notification at most (``order_id`` is unique), so whether
    the limit is applied with ``orderId`` cannot be seen here: only that the two combine."""
    stored = await api.store(2)
    response = await api.client.get(api.path)
    order_id = response.json()[0]["orderId"]
    assert await ids(api, f"?orderId={order_id}&limit=1") == stored[:1]


async def test_a_limit_with_leading_zeros_is_read_as_its_number(api: ListApi) -> None:
    stored = await api.store(3)
    assert await ids(api, "?limit=" + "0" * 5000 + "2") == stored[1:]


@pytest.mark.parametrize(
    "limit",
    ["0", "1001", "abc", "-1", "1.5", "+5", " 5", "١٠", "1" * 4301, "0" * 4301, "00001001"],
    ids=lambda limit: limit if len(limit) < 10 else f"{len(limit)} x {limit[0]}",
)
async def test_a_limit_outside_1_to_1000_is_a_400_naming_it(api: ListApi, limit: str) -> None:
    response = await api.client.get(api.path, params={"limit": limit})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert [error["field"] for error in response.json()["errors"]] == ["limit"]


@pytest.mark.parametrize(
    ("operations", "path"),
    [(payment.OPERATIONS, "/api/payments"), (notification.OPERATIONS, "/api/notifications")],
)
def test_the_limit_is_documented(operations: Any, path: str) -> None:
    document = openapi_document("service", "0.1.0", operations)
    parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
    assert parameters["limit"]["in"] == "query"
    assert parameters["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 100,
    }

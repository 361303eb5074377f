"""GET /api/payments and /api/notifications: ``limit``, ``before`` and ``Link``, in memory."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode
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


class Store(Protocol):
    async def __call__(self, count: int, apart: timedelta = timedelta(seconds=1)) -> list[UUID]:
        """Stores ``count`` rows ``apart`` from each other; their ids in list order."""
        ...


@dataclass(frozen=True)
class ListApi:
    path: str
    client: httpx.AsyncClient
    store: Store


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

    async def store(count: int, apart: timedelta = timedelta(seconds=1)) -> list[UUID]:
        rows = [listed.build(clock.advance(apart)) for _ in range(count)]
        async with db.unit_of_work() as uow:
            for row in rows:
                await getattr(uow, listed.repository).add(row)
            await uow.commit()
        return [row.id for row in sorted(rows, key=lambda row: (row.created_at, row.id))]

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


NEXT = r'<{path}\?limit=2&before=[\w-]{{40}}>; rel="next"'


def cursor_of(response: httpx.Response) -> str:
    """The ``before`` cursor of the response's ``Link: <…>; rel="next"``."""
    return httpx.URL(response.links["next"]["url"]).params["before"]


@pytest.mark.parametrize(("count", "sizes"), [(5, [2, 2, 1]), (4, [2, 2, 0])])
@pytest.mark.parametrize("apart", [timedelta(0), timedelta(microseconds=1)], ids=["tied", "1us"])
async def test_following_link_next_lists_every_row_once_and_ends_without_a_link(
    api: ListApi, count: int, sizes: list[int], apart: timedelta
) -> None:
    """Rows at one instant, or a microsecond apart: the cursor keeps the id and microsecond.
    Every full page links to the rows before it; the last page (short or empty) does not."""
    stored = await api.store(count, apart)
    pages: list[tuple[list[UUID], bool]] = []
    url: str | None = f"{api.path}?limit=2"
    while url is not None and len(pages) <= count:
        response = await api.client.get(url)
        assert response.status_code == 200, response.text
        pages.append(([UUID(row["id"]) for row in response.json()], "next" in response.links))
        url = response.links.get("next", {}).get("url")
        if url is not None:
            assert re.fullmatch(NEXT.format(path=api.path), response.headers["link"])
    assert [(len(page), linked) for page, linked in pages] == [(n, n == 2) for n in sizes]
    assert [row for page, _ in reversed(pages) for row in page] == stored


async def test_only_a_full_page_without_an_order_id_has_a_link(api: ListApi) -> None:
    await api.store(3)
    newest_order = (await api.client.get(api.path)).json()[-1]["orderId"]
    assert "link" not in (await api.client.get(api.path)).headers  # 3 of 100
    assert "link" not in (await api.client.get(f"{api.path}?limit=4")).headers
    assert "next" in (await api.client.get(f"{api.path}?limit=3")).links
    of_order = await api.client.get(f"{api.path}?orderId={newest_order}&limit=1")
    assert len(of_order.json()) == 1 and "link" not in of_order.headers  # one per order at most


async def test_before_with_an_order_id_applies_both(api: ListApi) -> None:
    """Both are filters: the order's row, if older than the cursor."""
    older, newer = await api.store(2)
    orders = {UUID(row["id"]): row["orderId"] for row in (await api.client.get(api.path)).json()}
    query = {"before": cursor_of(await api.client.get(f"{api.path}?limit=1"))}  # before newer
    assert await ids(api, "?" + urlencode(query | {"orderId": orders[older]})) == [older]
    assert await ids(api, "?" + urlencode(query | {"orderId": orders[newer]})) == []


TAMPERED: dict[str, Callable[[str], str]] = {
    "not base64url": lambda cursor: "nope",
    "truncated": lambda cursor: cursor[:-1],
    "lengthened": lambda cursor: cursor + "A",
    "padded": lambda cursor: cursor + "=",
    "standard alphabet": lambda cursor: "+/" + cursor[2:],
    "time edited": lambda cursor: _edit(cursor, 3),
    "id edited": lambda cursor: _edit(cursor, 20),
    "check edited": lambda cursor: _edit(cursor, len(cursor) - 1),
}


def _edit(cursor: str, at: int) -> str:
    return cursor[:at] + ("B" if cursor[at] == "A" else "A") + cursor[at + 1 :]


@pytest.mark.parametrize("tamper", TAMPERED.values(), ids=TAMPERED.keys())
async def test_a_cursor_no_link_gave_is_a_400_naming_before(
    api: ListApi, tamper: Callable[[str], str]
) -> None:
    await api.store(2)
    cursor = cursor_of(await api.client.get(f"{api.path}?limit=1"))
    assert len(await ids(api, f"?before={cursor}")) == 1  # untouched, it is taken
    response = await api.client.get(api.path, params={"before": tamper(cursor)})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert [error["field"] for error in response.json()["errors"]] == ["before"]


@pytest.mark.parametrize(
    ("operations", "path"),
    [(payment.OPERATIONS, "/api/payments"), (notification.OPERATIONS, "/api/notifications")],
)
def test_the_cursor_and_the_link_are_documented(operations: Any, path: str) -> None:
    document = openapi_document("service", "0.1.0", operations)
    operation = document["paths"][path]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["before"]["in"] == "query"
    assert parameters["before"]["schema"] == {"type": "string"}
    assert operation["responses"]["200"]["headers"]["Link"]["schema"] == {"type": "string"}

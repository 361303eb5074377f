"""POST /api/orders over the real routes and error handlers, on the in-memory order database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest
from commerce_apps.http.problems import EXCEPTION_HANDLERS, PROBLEM_JSON
from commerce_apps.services.order import order_routes
from core_saga.handlers.order import OrderService
from core_saga.inventory import SEED_PRODUCTS
from core_saga.memory import ManualClock, MemoryOrderDatabase
from starlette.applications import Starlette

pytestmark = pytest.mark.unit

MOUSE = SEED_PRODUCTS[0].id
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    clock = ManualClock()
    db = MemoryOrderDatabase(clock)
    routes = order_routes(OrderService(db.unit_of_work, clock), db.unit_of_work)
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://order") as http:
        yield http


def order_text(quantity: str = "2", unit_price: str = "10.50") -> bytes:
    """A body written by hand, so a literal such as ``99.480`` reaches the server as sent."""
    line = f'{{"productId": "{MOUSE}", "quantity": {quantity}, "unitPrice": {unit_price}}}'
    return f'{{"customerId": "{uuid4()}", "items": [{line}]}}'.encode()


async def post(client: httpx.AsyncClient, body: bytes, key: str | None = "k") -> httpx.Response:
    headers = JSON if key is None else {**JSON, "Idempotency-Key": key}
    return await client.post("/api/orders", content=body, headers=headers)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_an_order_without_an_idempotency_key_is_a_400(client: httpx.AsyncClient) -> None:
    body = problem(await post(client, order_text(), key=None), 400)
    assert "Idempotency-Key" in body["detail"]


@pytest.mark.parametrize(
    "text",
    [b"[" * 60_000, order_text("NaN"), order_text("2", "Infinity"), order_text("2", "-Infinity")],
    ids=["nested too deeply", "NaN", "Infinity", "-Infinity"],
)
async def test_json_python_cannot_parse_or_reads_beyond_json_is_a_400(
    client: httpx.AsyncClient, text: bytes
) -> None:
    """Python's json reads NaN and Infinity, which JSON has not (in an unknown field such an
    order was placed)."""
    body = problem(await post(client, text), 400)
    assert "malformed JSON" in body["detail"]


async def test_nan_in_an_unknown_field_is_a_400_too(client: httpx.AsyncClient) -> None:
    body = problem(await post(client, order_text().replace(b"{", b'{"note": NaN, ', 1)), 400)
    assert body["detail"] == "malformed JSON: NaN is not JSON"


async def test_an_integer_past_pythons_4300_digits_is_a_field_out_of_range(
    client: httpx.AsyncClient,
) -> None:
    """Valid JSON: its field answers, 422, where a 400 quoted Python's digit limit."""
    body = problem(await post(client, order_text("9" * 5_000)), 422)
    assert [error["field"] for error in body["errors"]] == ["items.0.quantity"]
    assert "set_int_max_str_digits" not in str(body)


@pytest.mark.parametrize(
    ("quantity", "unit_price", "field"),
    [
        ("true", "10.50", "items.0.quantity"),
        ('"2"', "10.50", "items.0.quantity"),
        ("2", '"1.5"', "items.0.unitPrice"),
        ("2", "true", "items.0.unitPrice"),
        ("2", "99.481", "items.0.unitPrice"),
    ],
)
async def test_a_line_that_is_not_json_numbers_names_its_field(
    client: httpx.AsyncClient, quantity: str, unit_price: str, field: str
) -> None:
    body = problem(await post(client, order_text(quantity, unit_price)), 422)
    assert [error["field"] for error in body["errors"]] == [field]  # and no "items: too short"


async def test_an_order_without_lines_is_too_short(client: httpx.AsyncClient) -> None:
    body = problem(await post(client, f'{{"customerId": "{uuid4()}", "items": []}}'.encode()), 422)
    assert [(e["field"], e["message"]) for e in body["errors"]] == [
        ("items", "Tuple should have at least 1 item after validation, not 0")
    ]


@pytest.mark.parametrize("quantity", ["1e999999999", "-1e999999999", "1e-999999999", "2.5"])
async def test_a_quantity_that_is_not_a_whole_number_is_refused_unexpanded(
    client: httpx.AsyncClient, quantity: str
) -> None:
    """``1e999999999`` was once expanded to a billion digits, stalling the event loop."""
    body = problem(await post(client, order_text(quantity)), 422)
    assert [error["field"] for error in body["errors"]] == ["items.0.quantity"]
    assert "whole number" in body["errors"][0]["message"]


@pytest.mark.parametrize("quantity", ["2.0", "2.000", "0.2e1"])
async def test_a_whole_quantity_may_be_written_with_a_point(
    client: httpx.AsyncClient, quantity: str
) -> None:
    response = await post(client, order_text(quantity))
    assert response.status_code == 201, response.text
    assert response.json()["items"][0]["quantity"] == 2


@pytest.mark.parametrize(
    ("unit_price", "echoed", "total"),
    [
        ("10", 10, 20),
        ("10.5", 10.5, 21),
        ("99.48", 99.48, 198.96),
        ("99.480", 99.48, 198.96),  # trailing zeros: still two places
        ("10.000", 10, 20),
    ],
)
async def test_prices_are_json_numbers_of_at_most_two_places(
    client: httpx.AsyncClient, unit_price: str, echoed: float, total: float
) -> None:
    response = await post(client, order_text("2", unit_price))
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["items"][0]["unitPrice"] == echoed
    assert order["totalAmount"] == total


async def test_a_declared_length_of_thousands_of_digits_is_too_large(
    client: httpx.AsyncClient,
) -> None:
    headers = {**JSON, "Idempotency-Key": "k", "Content-Length": "9" * 5_000}
    response = await client.post("/api/orders", content=order_text(), headers=headers)
    assert problem(response, 413)["detail"] == "the body exceeds 65536 bytes"


async def test_a_declared_length_with_thousands_of_leading_zeros_is_read(
    client: httpx.AsyncClient,
) -> None:
    """Its digits were counted without the zeros but converted with them: int() refused
    the 5,000 digits, a 500 and a traceback (an HTTP audit found it)."""
    body = order_text()
    headers = {**JSON, "Idempotency-Key": "k", "Content-Length": "0" * 5_000 + str(len(body))}
    response = await client.post("/api/orders", content=body, headers=headers)
    assert response.status_code == 201, response.text


async def test_whitespace_around_an_idempotency_key_is_no_part_of_it(
    client: httpx.AsyncClient,
) -> None:
    """``k `` was another key than ``k`` (uvicorn strips only what comes before a value): a
    proxy trimming the header of a retry placed the order twice."""
    body = order_text()
    first = await post(client, body, key="k-1 ")
    again = await post(client, body, key="k-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()


async def test_two_idempotency_keys_are_a_400(client: httpx.AsyncClient) -> None:
    headers = [("Content-Type", "application/json"), ("Idempotency-Key", "a")]
    headers.append(("Idempotency-Key", "b"))
    response = await client.post("/api/orders", content=order_text(), headers=headers)
    assert "one Idempotency-Key" in problem(response, 400)["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/merge-patch+json"},  # a +json type: rules of its own
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ],
)
async def test_another_media_type_or_a_coding_is_a_415(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """A gzipped body was read as JSON: 400 "can't decode byte 0x8b"."""
    response = await client.post(
        "/api/orders", content=order_text(), headers={**headers, "Idempotency-Key": "k"}
    )
    problem(response, 415)


async def test_fields_go_by_their_wire_names_only(client: httpx.AsyncClient) -> None:
    """``customer_id`` and ``unit_price`` (the models' Python names) were accepted too."""
    line = f'{{"product_id": "{MOUSE}", "quantity": 1, "unit_price": 1}}'
    body = problem(
        await post(client, f'{{"customer_id": "{uuid4()}", "items": [{line}]}}'.encode()), 422
    )
    assert {error["field"] for error in body["errors"]} == {
        "customerId",
        "items.0.productId",
        "items.0.unitPrice",
    }

"""Whatever body a client sends, POST /api/orders answers a 2xx or a problem+json 4xx, never a
500, and at once: numbers of any size or exponent, any JSON shape, any bytes."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import uuid4

import httpx
import pytest
from commerce_apps.http.problems import EXCEPTION_HANDLERS, PROBLEM_JSON
from commerce_apps.services.order import order_routes
from core_saga.handlers.order import OrderService
from core_saga.memory import ManualClock, MemoryOrderDatabase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

pytestmark = pytest.mark.property

MOUSE = "11111111-1111-1111-1111-111111111111"
ANSWERS = {200, 201, 400, 409, 413, 415, 422}

# JSON numbers as a client may write them: long digit runs, fractions, huge or tiny exponents.
numbers = st.builds(
    lambda mantissa, exponent: mantissa if exponent is None else f"{mantissa}e{exponent}",
    st.from_regex(r"\A-?(0|[1-9]\d{0,40})(\.\d{1,40})?\Z"),
    st.one_of(st.none(), st.integers(-(10**9), 10**9)),
)
long_runs = st.integers(1, 6_000).map(lambda digits: "7" * digits)  # Python parses 4,300 at most
deep = st.integers(1, 5_000).map(lambda depth: "[" * depth + "]" * depth)
scalars = st.one_of(
    numbers,
    long_runs,
    deep,
    st.sampled_from(["true", "false", "null", '""', '"1.5"', '"2"', f'"{MOUSE}"', "[]", "{}"]),
    st.text(max_size=20).map(json.dumps),
)
any_json = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: f"[{','.join(xs)}]"),
        st.dictionaries(st.text(max_size=8), inner, max_size=4).map(
            lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
        ),
    ),
    max_leaves=12,
)


def field(valid: str) -> st.SearchStrategy[str]:
    """Mostly the valid literal, else anything JSON."""
    return st.one_of(st.just(valid), st.just(valid), any_json)


lines = st.builds(
    lambda product, quantity, price: (
        f'{{"productId":{product},"quantity":{quantity},"unitPrice":{price}}}'
    ),
    field(f'"{MOUSE}"'),
    st.one_of(field("2"), numbers),
    st.one_of(field("10.50"), numbers),
)
orders = st.builds(
    lambda customer, items, currency: (
        f'{{"customerId":{customer},"items":[{",".join(items)}],"currency":{currency}}}'
    ),
    field(f'"{uuid4()}"'),
    st.lists(lines, min_size=0, max_size=3),
    field('"EUR"'),
)
bodies = st.one_of(orders, any_json, st.binary(max_size=64).map(lambda b: b.decode("latin-1")))


async def post(body: str) -> httpx.Response:
    clock = ManualClock()
    db = MemoryOrderDatabase(clock)
    app = Starlette(
        routes=order_routes(OrderService(db.unit_of_work, clock), db.unit_of_work),
        exception_handlers=EXCEPTION_HANDLERS,
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://order") as client:
        headers = {"Content-Type": "application/json", "Idempotency-Key": "k"}
        return await client.post("/api/orders", content=body.encode("latin-1", "replace"),
                                 headers=headers)  # fmt: skip


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_any_body_is_answered_without_a_server_error(body: str) -> None:
    response = asyncio.run(post(body))
    assert response.status_code in ANSWERS, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM_JSON
        problem: dict[str, Any] = response.json()
        assert problem["status"] == response.status_code

"""The saga over HTTP on a platform whose payments succeed: confirm, reject, idempotency."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.e2e.platform import (
    CUSTOMER,
    HUB,
    MONITOR,
    MOUSE,
    RunningPlatform,
    order_body,
)

pytestmark = pytest.mark.e2e


async def test_the_readme_demo_confirms_an_order(succeeding: RunningPlatform) -> None:
    response = await succeeding.place(order_body((MOUSE, 2, "29.99"), (HUB, 1, "39.50")))
    assert response.status_code == 201
    created = response.json()
    assert response.headers["location"] == f"/api/orders/{created['id']}"
    assert created["status"] == "PENDING"
    assert created["totalAmount"] == 99.48
    order = await succeeding.terminal(created["id"])
    assert order["status"] == "CONFIRMED"


async def test_a_confirmed_order_is_sold_charged_once_and_notified_once(
    succeeding: RunningPlatform,
) -> None:
    first = (await succeeding.place(order_body((MOUSE, 1, "10.00")))).json()
    await succeeding.terminal(first["id"])
    await succeeding.settled(first["id"])
    before = await succeeding.products()
    created = (await succeeding.place(order_body((MOUSE, 3, "10.00")))).json()
    order = await succeeding.terminal(created["id"])
    await succeeding.settled(created["id"])

    assert order["status"] == "CONFIRMED"
    payments = await succeeding.payments(created["id"])
    assert [(p["status"], p["amount"]) for p in payments] == [("SUCCEEDED", 30)]
    notes = await succeeding.notifications(created["id"])
    assert [(n["type"], n["recipient"]) for n in notes] == [("ORDER_CONFIRMED", CUSTOMER)]
    after = await succeeding.products()
    assert after[MOUSE]["stock"] == before[MOUSE]["stock"] - 3
    assert after[MOUSE]["sold"] == before[MOUSE]["sold"] + 3
    history = (
        await succeeding.http.get(succeeding.url("order", f"/api/orders/{created['id']}/history"))
    ).json()
    assert history[0]["status"] == "PENDING" and history[-1]["status"] == "CONFIRMED"
    assert next(h["eventType"] for h in history) == "OrderCreated"


async def test_short_stock_is_rejected_and_nothing_is_charged(succeeding: RunningPlatform) -> None:
    before = await succeeding.products()
    created = (
        await succeeding.place(order_body((MOUSE, 1, "1.00"), (MONITOR, 31, "199.00")))
    ).json()
    order = await succeeding.terminal(created["id"])
    await succeeding.settled(created["id"])

    assert order["status"] == "CANCELLED"
    assert "Insufficient stock" in order["cancellationReason"]
    assert await succeeding.payments(created["id"]) == []
    assert [n["type"] for n in await succeeding.notifications(created["id"])] == ["ORDER_CANCELLED"]
    after = await succeeding.products()
    assert after[MOUSE] == before[MOUSE]
    assert after[MONITOR] == before[MONITOR]


async def test_an_unknown_product_is_rejected(succeeding: RunningPlatform) -> None:
    unknown = str(uuid.uuid4())
    created = (await succeeding.place(order_body((unknown, 1, "5.00")))).json()
    order = await succeeding.terminal(created["id"])
    assert order["status"] == "CANCELLED"
    assert "Unknown product" in order["cancellationReason"]
    assert await succeeding.payments(created["id"]) == []


async def test_idempotency_key_replays_and_conflicts(succeeding: RunningPlatform) -> None:
    key = f"idem-{uuid.uuid4()}"
    body = order_body((HUB, 1, "39.50"))
    first = await succeeding.place(body, key)
    assert first.status_code == 201
    reordered = {"currency": "EUR", "items": body["items"], "customerId": CUSTOMER}
    again = await succeeding.place(reordered, key)
    assert again.status_code == 200
    assert again.json() == first.json()
    other = await succeeding.place(order_body((HUB, 2, "39.50")), key)
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"
    missing = await succeeding.http.post(succeeding.url("order", "/api/orders"), json=body)
    assert missing.status_code == 400
    assert missing.headers["content-type"] == "application/problem+json"


async def test_sixteen_concurrent_posts_with_one_key_make_one_order(
    succeeding: RunningPlatform,
) -> None:
    key = f"race-{uuid.uuid4()}"
    body = order_body((MOUSE, 1, "29.99"))
    responses = await asyncio.gather(*(succeeding.place(body, key) for _ in range(16)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 15 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert all(r.json() == responses[0].json() for r in responses)

"""After 200 mixed orders, every saga invariant of DESIGN §3 holds, read through the APIs."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from tests.e2e.platform import INITIAL_STOCK, RunningPlatform, order_body, running_platform

pytestmark = pytest.mark.e2e
ORDERS = 200


@pytest.fixture(scope="module")
async def mixed(postgres_admin_url: str) -> AsyncIterator[RunningPlatform]:
    """Payments succeed for about 80% of orders, as the gateway decides from the order id."""
    async with running_platform(postgres_admin_url) as running:
        yield running


def random_order(rng: random.Random) -> dict[str, object]:
    products = rng.sample(sorted(INITIAL_STOCK), rng.randint(1, 3))
    return order_body(
        *((p, rng.randint(1, 4), f"{rng.randint(100, 9999) / 100:.2f}") for p in products)
    )


async def test_every_invariant_holds_after_200_mixed_orders(mixed: RunningPlatform) -> None:
    rng = random.Random(2026)
    bodies = [random_order(rng) for _ in range(ORDERS)]
    limit = asyncio.Semaphore(16)

    async def place(body: dict[str, object]) -> str:
        async with limit:
            response = await mixed.place(body)
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

    ids = await asyncio.gather(*(place(body) for body in bodies))
    # One order at a time: 200 pollers at once would starve the platform they wait for.
    finals = [await mixed.terminal(order_id, seconds=60) for order_id in ids]
    orders = dict(zip(ids, finals, strict=True))
    async with asyncio.timeout(60):  # every terminal order notified, no reservation left
        while len([n for n in await mixed.notifications() if n["sent"]]) < ORDERS or any(
            p["reserved"] for p in (await mixed.products()).values()
        ):
            await asyncio.sleep(0.1)

    statuses = Counter(order["status"] for order in orders.values())
    assert set(statuses) <= {"CONFIRMED", "CANCELLED"}
    assert statuses["CONFIRMED"] > 0 and statuses["CANCELLED"] > 0, statuses

    payments = await mixed.payments()
    succeeded = Counter(p["orderId"] for p in payments if p["status"] == "SUCCEEDED")
    assert max(Counter(p["orderId"] for p in payments).values()) == 1  # one charge per order
    sold: Counter[str] = Counter()
    for order_id, order in orders.items():
        if order["status"] == "CONFIRMED":
            assert succeeded[order_id] == 1, order_id
            for item in order["items"]:
                sold[item["productId"]] += item["quantity"]
        else:
            assert succeeded[order_id] == 0, order_id

    products = await mixed.products()
    for product_id, initial in INITIAL_STOCK.items():
        product = products[product_id]
        assert product["stock"] >= 0
        assert product["reserved"] == 0
        assert product["stock"] + product["reserved"] + product["sold"] == initial
        assert product["sold"] == sold[product_id]

    notes = Counter(n["orderId"] for n in await mixed.notifications())
    assert set(notes) == set(ids) and set(notes.values()) == {1}
    kinds = {n["orderId"]: n["type"] for n in await mixed.notifications()}
    for order_id, order in orders.items():
        assert kinds[order_id] == f"ORDER_{order['status']}"

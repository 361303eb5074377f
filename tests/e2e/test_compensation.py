"""Compensation over HTTP: failed payments and a payment outage leave nothing held or charged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.e2e.platform import (
    HUB,
    INITIAL_STOCK,
    KEYBOARD,
    RunningPlatform,
    order_body,
    running_platform,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def failing(postgres_admin_url: str) -> AsyncIterator[RunningPlatform]:
    async with running_platform(
        postgres_admin_url, {"payment": {"payment_force_outcome": "failure"}}
    ) as running:
        yield running


@pytest.fixture(scope="module")
async def impatient(postgres_admin_url: str) -> AsyncIterator[RunningPlatform]:
    """Payments succeed, but a saga times out after 2 s."""
    async with running_platform(
        postgres_admin_url,
        {"payment": {"payment_force_outcome": "success"}, "order": {"saga_timeout": 2.0}},
    ) as running:
        yield running


async def test_a_failed_payment_cancels_and_puts_stock_back(failing: RunningPlatform) -> None:
    created = (await failing.place(order_body((KEYBOARD, 4, "89.90"), (HUB, 1, "39.50")))).json()
    order = await failing.terminal(created["id"])
    await failing.settled(created["id"])

    assert order["status"] == "CANCELLED"
    assert order["cancellationReason"] == "Payment declined by provider"
    assert [p["status"] for p in await failing.payments(created["id"])] == ["FAILED"]
    assert [n["type"] for n in await failing.notifications(created["id"])] == ["ORDER_CANCELLED"]
    products = await failing.products()
    for product_id in (KEYBOARD, HUB):
        assert products[product_id]["stock"] == INITIAL_STOCK[product_id]
        assert products[product_id]["reserved"] == 0
        assert products[product_id]["sold"] == 0


async def test_the_deadline_cancels_while_payment_is_down_and_nothing_stays_charged(
    impatient: RunningPlatform,
) -> None:
    await impatient.platform.stop_service("payment")
    created = (await impatient.place(order_body((HUB, 2, "39.50")))).json()
    order = await impatient.terminal(created["id"])
    assert order["status"] == "CANCELLED"
    assert order["cancellationReason"] == "timeout"

    await impatient.platform.start_service("payment")
    await impatient.platform.wait_ready()
    await impatient.settled(created["id"])
    async with asyncio.timeout(40):  # payment catches up: no charge, or a charge refunded
        while True:
            payments = await impatient.payments(created["id"])
            if all(p["status"] in ("REFUNDED", "FAILED") for p in payments):
                break
            await asyncio.sleep(0.05)
    products = await impatient.products()
    assert products[HUB]["stock"] == INITIAL_STOCK[HUB]
    assert products[HUB]["reserved"] == 0
    assert products[HUB]["sold"] == 0
    assert [n["type"] for n in await impatient.notifications(created["id"])] == ["ORDER_CANCELLED"]

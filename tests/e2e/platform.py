"""A running platform for end-to-end tests, and the few HTTP helpers the tests share."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from adapters_kafka.dead_letters import read_dead_letters
from adapters_kafka.embedded import free_port
from adapters_kafka.settings import KafkaSettings
from commerce_apps.http.params import MAX_LIST_LIMIT
from commerce_apps.platform import Platform, PlatformConfig
from commerce_apps.settings import SERVICES, ServiceName, Settings
from core_saga.messages import SAGA_TOPICS

TERMINAL = ("CONFIRMED", "CANCELLED")
MOUSE = "11111111-1111-1111-1111-111111111111"
KEYBOARD = "22222222-2222-2222-2222-222222222222"
HUB = "33333333-3333-3333-3333-333333333333"
MONITOR = "44444444-4444-4444-4444-444444444444"
STAND = "55555555-5555-5555-5555-555555555555"
INITIAL_STOCK = {MOUSE: 100, KEYBOARD: 50, HUB: 75, MONITOR: 30, STAND: 200}
PAGE = MAX_LIST_LIMIT  # the most rows a payment or notification list returns at once
CUSTOMER = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
PAYMENTS_SUCCEED: Mapping[ServiceName, Mapping[str, Any]] = {
    "payment": {"payment_force_outcome": "success"}
}


# For tests that pause or restart the broker: only the one a platform embeds is theirs to.
EMBEDDED_BROKER_ONLY = pytest.mark.skipif(
    bool(os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")), reason="the broker is not embedded"
)


def namespace() -> str:
    """A Kafka namespace of its own for a test platform: several may share one broker
    (``TEST_KAFKA_BOOTSTRAP_SERVERS``), each reading only its own topics and groups."""
    return f"t{uuid.uuid4().hex[:8]}."


def kafka_of(platform: Platform) -> KafkaSettings:
    """Where the platform's events are, in its namespace."""
    return KafkaSettings(
        platform.bootstrap_servers, namespace=platform.config.settings.kafka_namespace
    )


def order_body(*lines: tuple[str, int, str], customer: str = CUSTOMER) -> dict[str, Any]:
    return {
        "customerId": customer,
        "items": [
            {"productId": p, "quantity": q, "unitPrice": float(price)} for p, q, price in lines
        ],
        "currency": "EUR",
    }


@dataclass
class RunningPlatform:
    platform: Platform
    http: httpx.AsyncClient

    def url(self, service: ServiceName, path: str) -> str:
        return self.platform.urls[service] + path

    async def place(self, body: Any, key: str | None = None) -> httpx.Response:
        return await self.http.post(
            self.url("order", "/api/orders"),
            json=body,
            headers={"Idempotency-Key": key or str(uuid.uuid4())},
        )

    async def order(self, order_id: str) -> dict[str, Any]:
        """The order; a 503 (a database connection lost) is retried, as a client would."""
        url = self.url("order", f"/api/orders/{order_id}")
        response, _ = await until_available(lambda: self.http.get(url))
        response.raise_for_status()
        return dict(response.json())

    async def terminal(self, order_id: str, seconds: float = 20) -> dict[str, Any]:
        """The order once CONFIRMED or CANCELLED (fails the test after ``seconds``)."""
        async with asyncio.timeout(seconds):
            while (order := await self.order(order_id))["status"] not in TERMINAL:
                await asyncio.sleep(0.02)
        return order

    async def products(self) -> dict[str, dict[str, Any]]:
        response = await self.http.get(self.url("inventory", "/api/products"))
        return {p["id"]: p for p in response.json()}

    async def payments(self, order_id: str | None = None) -> list[dict[str, Any]]:
        return await self.listed("payment", "/api/payments", order_id)

    async def notifications(self, order_id: str | None = None) -> list[dict[str, Any]]:
        return await self.listed("notification", "/api/notifications", order_id)

    async def listed(
        self, service: ServiceName, path: str, order_id: str | None = None, limit: int = PAGE
    ) -> list[dict[str, Any]]:
        """Every row (of one order, if given), oldest first, following ``Link: rel="next"``
        back through the older pages (a count or an invariant over one page would miss some).
        """
        params = {"orderId": order_id} if order_id else {}
        page: str | None = self.url(service, f"{path}?{urlencode({**params, 'limit': limit})}")
        rows: list[dict[str, Any]] = []
        while page is not None:
            response = await self.http.get(page)
            assert response.status_code == 200, response.text
            rows[:0] = response.json()
            older = response.links.get("next")
            page = None if older is None else self.url(service, older["url"])
        return rows

    async def settled(self, order_id: str, seconds: float = 40) -> None:
        """Until the order's notification is sent and no product holds a reservation any more.

        Tests run one after another, so no reservation at all means none of theirs is left.
        """
        async with asyncio.timeout(seconds):
            while not [n for n in await self.notifications(order_id) if n["sent"]]:
                await asyncio.sleep(0.02)
            while any(p["reserved"] for p in (await self.products()).values()):
                await asyncio.sleep(0.02)


@asynccontextmanager
async def running_platform(
    postgres_admin_url: str,
    per_service: Mapping[ServiceName, Mapping[str, Any]] | None = None,
    span_exporter: Any = None,
    database_prefix: str | None = None,
) -> AsyncIterator[RunningPlatform]:
    """A fresh platform: its own databases and, unless one is given, its own broker.

    ``database_prefix`` names the databases: another platform's, to start again on its data.
    """
    config = PlatformConfig(
        # 6 partitions, not the embedded broker's 1: replicas share them, and one order's
        # events cross partitions as they would in production
        settings=Settings(
            consumer_retry_backoff=0.1,
            deadline_sweep_interval=0.2,
            topic_partitions=6,
            kafka_namespace=namespace(),
        ),
        database_url=postgres_admin_url,
        database_prefix=database_prefix or f"e2e_{uuid.uuid4().hex[:8]}_",
        kafka_bootstrap_servers=os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS"),
        ports={service: free_port() for service in SERVICES},
        per_service=per_service or {},
        span_exporter=span_exporter,
        consumer_options={
            "fetch_max_wait_ms": 10,
            "session_timeout_ms": 2_000,
            "heartbeat_interval_ms": 250,
        },
    )
    platform = Platform(config)
    await platform.start()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            yield RunningPlatform(platform, http)
    finally:
        await platform.stop()


async def assert_every_effect_once(
    running: RunningPlatform, orders: Mapping[str, Mapping[str, Any]], seconds: float = 60
) -> None:
    """Once every order's notification is sent and no stock is reserved: each order terminal,
    charged once if confirmed and never otherwise, its quantities sold if confirmed, the stock
    of every product conserved, one notification per order (DESIGN §3)."""
    async with asyncio.timeout(seconds):
        while len([n for n in await running.notifications() if n["sent"]]) < len(orders) or any(
            p["reserved"] for p in (await running.products()).values()
        ):
            await asyncio.sleep(0.1)
    assert {order["status"] for order in orders.values()} <= set(TERMINAL)
    payments = await running.payments()
    assert max(Counter(p["orderId"] for p in payments).values(), default=1) == 1
    succeeded = {p["orderId"] for p in payments if p["status"] == "SUCCEEDED"}
    confirmed = {i for i, order in orders.items() if order["status"] == "CONFIRMED"}
    assert succeeded == confirmed
    sold: Counter[str] = Counter()
    for order_id in confirmed:
        for item in orders[order_id]["items"]:
            sold[item["productId"]] += item["quantity"]
    for product_id, product in (await running.products()).items():
        assert product["stock"] >= 0
        assert product["stock"] + product["reserved"] + product["sold"] == INITIAL_STOCK[product_id]
        assert product["sold"] == sold[product_id]
    notes = Counter(n["orderId"] for n in await running.notifications())
    assert set(notes) == set(orders)
    assert set(notes.values()) == {1}


async def until_available(
    send: Callable[[], Awaitable[httpx.Response]], seconds: float = 60, pace: float = 1.0
) -> tuple[httpx.Response, int]:
    """``send`` again while it answers a 503 problem, after ``pace`` times its Retry-After,
    as a client would, for ``seconds`` at most: the last answer, and the 503s met."""
    unavailable = 0
    deadline = time.monotonic() + seconds
    while (response := await send()).status_code == 503 and time.monotonic() < deadline:
        assert response.headers["content-type"] == "application/problem+json"
        unavailable += 1
        await asyncio.sleep(float(response.headers["retry-after"]) * pace)
    return response, unavailable


async def place_retrying(
    running: RunningPlatform, body: Any, key: str, seconds: float = 60
) -> tuple[str, int]:
    """POST until accepted, retrying a 503 with the same key (after a fifth of its
    Retry-After, to keep tests short): the order's id, and the 503s met."""
    response, unavailable = await until_available(
        lambda: running.place(body, key=key), seconds, pace=0.2
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"]), unavailable


async def assert_confirmed_once_without_dead_letters(
    running: RunningPlatform, ids: list[str], seconds: float = 90
) -> None:
    """After an outage: every order CONFIRMED (none cancelled by its deadline, so no event
    was lost to a dead-letter topic on the way), every effect once, nothing dead-lettered
    (an outage is retried, never dead-lettered)."""
    finals = [await running.terminal(order_id, seconds=seconds) for order_id in ids]
    outcomes = [(o["status"], o["cancellationReason"]) for o in finals]
    assert {status for status, _ in outcomes} == {"CONFIRMED"}, outcomes
    await assert_every_effect_once(running, dict(zip(ids, finals, strict=True)), seconds)
    kafka = kafka_of(running.platform)
    for topic in SAGA_TOPICS:
        assert await read_dead_letters(kafka, topic) == []

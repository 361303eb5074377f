"""An embedded broker restarted empty: the events it held unread are sent again.

``commerce up`` keeps its databases across restarts, but the embedded broker keeps nothing.
An event published to the old broker that no consumer had read yet would be lost with it;
the new platform marks every event its outboxes still keep as unpublished, the relays send
them again, and the inboxes skip the ones already applied.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from adapters_postgres.engine import create_engine
from adapters_postgres.outbox import PostgresOutboxStore
from core_saga.clock import SystemClock
from sqlalchemy.pool import NullPool

from tests.e2e.platform import (
    EMBEDDED_BROKER_ONLY,
    MOUSE,
    PAYMENTS_SUCCEED,
    RunningPlatform,
    order_body,
    running_platform,
)

pytestmark = [pytest.mark.e2e, EMBEDDED_BROKER_ONLY]

# No deadline during the test: the order must complete, not be cancelled for its lateness.
PER_SERVICE = {**PAYMENTS_SUCCEED, "order": {"saga_timeout": 600.0}}


async def all_published(running: RunningPlatform, service: str, seconds: float = 20) -> None:
    engine = create_engine(running.platform.database_urls[service], poolclass=NullPool)
    store = PostgresOutboxStore(engine)
    try:
        async with asyncio.timeout(seconds):
            while await store.oldest_unpublished_age(SystemClock().now()) > 0:
                await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


async def test_an_event_the_old_broker_held_unread_is_applied_after_the_restart(
    postgres_admin_url: str,
) -> None:
    prefix = f"e2e_{uuid.uuid4().hex[:8]}_"
    async with running_platform(postgres_admin_url, PER_SERVICE, database_prefix=prefix) as first:
        await first.platform.stop_service("inventory")  # nobody reads OrderCreated now
        response = await first.place(order_body((MOUSE, 2, "29.99")))
        assert response.status_code == 201
        order_id = response.json()["id"]
        await all_published(first, "order")  # the broker acknowledged OrderCreated
        assert (await first.order(order_id))["status"] == "PENDING"

    # Same databases, a new (empty) broker, every service running.
    async with running_platform(postgres_admin_url, PER_SERVICE, database_prefix=prefix) as second:
        order = await second.terminal(order_id, seconds=60)
        assert order["status"] == "CONFIRMED"
        await second.settled(order_id)
        [payment] = await second.payments(order_id)
        assert payment["status"] == "SUCCEEDED"
        assert len(await second.notifications(order_id)) == 1
        assert (await second.products())[MOUSE]["sold"] == 2

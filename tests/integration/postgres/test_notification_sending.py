"""Notifications on PostgreSQL: sent after their commit, and again by one replica's sweep
until recorded as sent; notification_0005 goes down only once none is unsent."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from adapters_kafka.embedded import free_port
from adapters_postgres.engine import create_engine
from adapters_postgres.migrations import current_revisions, downgrade, is_at_head, migrate
from adapters_postgres.uow import notification_uow_factory
from commerce_apps.app import build_app
from commerce_apps.container import container_for
from commerce_apps.settings import Settings
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.notification import NotificationService
from core_saga.memory import ManualClock, MemoryNotifier
from core_saga.messages import Envelope, OrderConfirmed
from core_saga.notifications import Notification
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration


def confirmed(order_id: UUID, clock: ManualClock) -> Envelope:
    return new_envelope(OrderConfirmed(order_id=order_id), clock.now(), None)


async def _store_unsent(engine: AsyncEngine, clock: ManualClock, orders: list[UUID]) -> None:
    """A batch consumed while the notifier is down: stored, not sent."""
    down = MemoryNotifier()
    down.down = True
    service = NotificationService(notification_uow_factory(engine), clock, down)
    await service.handle_batch([confirmed(i, clock) for i in orders])
    assert await _unsent(engine) == len(orders)


async def _unsent(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM notifications_unsent")
        return int((await conn.execute(query)).scalar_one())


class CountingNotifier(MemoryNotifier):
    """Every send, kept (``sent`` keeps each notification once, as deduplicated)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[UUID] = []

    async def send(self, notification: Notification) -> None:
        self.calls.append(notification.order_id)
        await asyncio.sleep(0.02)  # a remote notifier's time: two sweeps would overlap
        await super().send(notification)


async def test_two_notification_replicas_sweep_one_at_a_time(
    new_database: DatabaseFactory,
) -> None:
    """Each would send every unsent notification: with two, twice each."""
    url = await new_database.create("notification")
    engine = create_engine(url)
    try:
        orders = [uuid4() for _ in range(20)]
        await _store_unsent(engine, ManualClock(), orders)
        notifier = CountingNotifier()
        settings = Settings(
            database_url=url,
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            notification_resend_after=0.001,
            notification_sweep_interval=0.01,
        )
        apps = [
            build_app(container_for("notification", settings, notifier=notifier)) for _ in range(2)
        ]
        first, second = (app.router.lifespan_context(app) for app in apps)
        async with first, second, asyncio.timeout(20):
            while await _unsent(engine):
                await asyncio.sleep(0.05)
        assert sorted(notifier.calls) == sorted(orders)  # each sent once
    finally:
        await engine.dispose()


async def test_the_notification_service_reports_how_long_a_notification_waited(
    new_database: DatabaseFactory,
) -> None:
    """``notification_oldest_unsent_age_seconds``, sampled while the service runs (the sweep
    told to wait, so it leaves the notification unsent)."""
    url = await new_database.create("notification")
    engine = create_engine(url)
    settings = Settings(
        database_url=url,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        notification_resend_after=3600,
    )
    container = container_for("notification", settings)
    app = build_app(container)
    registry = container.metrics().registry
    gauge = "notification_oldest_unsent_age_seconds"
    try:
        stored_at = ManualClock(datetime.now(UTC) - timedelta(seconds=90))
        await _store_unsent(engine, stored_at, [uuid4()])
        async with app.router.lifespan_context(app):
            async with asyncio.timeout(10):  # the first sample is taken at start
                while (registry.get_sample_value(gauge) or 0) < 90:
                    await asyncio.sleep(0.05)
            assert (registry.get_sample_value(gauge) or 0) < 150
    finally:
        await engine.dispose()


async def test_the_unsent_revision_goes_down_only_once_none_is_unsent(
    new_database: DatabaseFactory,
) -> None:
    """Down, the older release would never send them; what an older release stored counts
    as sent once the revision is up again."""
    url = await new_database.create("notification")
    engine = create_engine(url)
    try:
        clock = ManualClock()
        await _store_unsent(engine, clock, [uuid4()])
        with pytest.raises(RuntimeError, match="1 notifications are not sent yet"):
            await downgrade(url, "notification", "notification_0004")
        assert await is_at_head(url, "notification")

        notifier = MemoryNotifier()
        service = NotificationService(notification_uow_factory(engine), clock, notifier)
        clock.advance(timedelta(seconds=10))
        assert await service.send_unsent() == 1
        await downgrade(url, "notification", "notification_0004")
        assert await current_revisions(url, "notification") == {"notification_0004"}
        async with engine.begin() as conn:  # as the older release stores one
            await conn.execute(
                text(
                    "INSERT INTO notifications (id, order_id, type, recipient, message,"
                    " created_at) VALUES (gen_random_uuid(), gen_random_uuid(),"
                    " 'ORDER_CONFIRMED', 'c', 'm', now())"
                )
            )
        await migrate(url, "notification")
        assert await is_at_head(url, "notification")
        assert await _unsent(engine) == 0
        clock.advance(timedelta(hours=1))
        assert await service.send_unsent() == 0
    finally:
        await engine.dispose()

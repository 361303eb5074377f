"""Payments on PostgreSQL: the gateway is called with no transaction open and the order free;
payment_0005 lets payments wait on the gateway, and goes down only once none does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from adapters_kafka.embedded import free_port
from adapters_postgres.engine import create_engine
from adapters_postgres.migrations import current_revisions, downgrade, is_at_head, migrate
from adapters_postgres.payment_repositories import _DUE
from adapters_postgres.sql import waiting_params
from adapters_postgres.uow import payment_uow_factory
from commerce_apps.app import build_app
from commerce_apps.container import container_for
from commerce_apps.settings import Settings
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.payment import PaymentService
from core_saga.memory import ManualClock, ScriptedGateway
from core_saga.payments import ChargeResult, PaymentStatus
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.fixtures.postgres import DatabaseFactory
from tests.unit.test_payment_service import reserved

pytestmark = pytest.mark.integration

OPEN_TRANSACTIONS = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
)


class WatchingGateway(ScriptedGateway):
    """Notes, on each charge, whether a session sits in a transaction and whether another
    transaction can hold the order."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(success_rate=1.0)
        self.engine = engine
        self.seen: list[tuple[int, bool]] = []
        self._one_at_a_time = asyncio.Lock()  # its own transaction must not count for another

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        async with self._one_at_a_time:
            async with self.engine.connect() as conn:
                in_transaction = (await conn.execute(OPEN_TRANSACTIONS)).scalar_one()
            async with payment_uow_factory(self.engine)() as uow:
                try:
                    await asyncio.wait_for(uow.hold({order_id}), 2.0)
                    free = True
                except TimeoutError:
                    free = False
        self.seen.append((in_transaction, free))
        return await super().charge(order_id, amount, currency)


async def test_a_batch_calls_the_gateway_with_no_transaction_open(
    new_database: DatabaseFactory,
) -> None:
    engine = create_engine(await new_database.create("payment"))
    try:
        clock = ManualClock()
        gateway = WatchingGateway(engine)
        service = PaymentService(payment_uow_factory(engine), clock, gateway)
        batch = [new_envelope(reserved(uuid4()), clock.now(), None) for _ in range(3)]
        await service.handle_batch(batch)
        assert gateway.seen == [(0, True)] * 3
        async with engine.connect() as conn:
            statuses = (await conn.execute(text("SELECT status FROM payments"))).scalars().all()
        assert statuses == ["SUCCEEDED"] * 3
    finally:
        await engine.dispose()


async def test_the_due_payments_revision_goes_down_only_once_none_is_due(
    new_database: DatabaseFactory,
) -> None:
    url = await new_database.create("payment")
    engine = create_engine(url)
    try:
        clock = ManualClock()
        gateway = ScriptedGateway(success_rate=1.0)
        service = PaymentService(payment_uow_factory(engine), clock, gateway)
        gateway.down = True
        await service.handle(new_envelope(reserved(uuid4()), clock.now(), None))
        async with engine.connect() as conn:
            plan = await _due_plan(conn)
            validated = await conn.execute(
                text("SELECT convalidated FROM pg_constraint WHERE conname = 'status_valid'")
            )
            assert validated.scalar_one() is True
        assert "payments_due_idx" in plan

        with pytest.raises(DBAPIError, match="status_valid"):
            await downgrade(url, "payment", "payment_0004")
        assert await is_at_head(url, "payment")  # nothing changed: PENDING is still allowed

        gateway.down = False
        clock.advance(timedelta(seconds=10))
        assert await service.settle_stale() == 1
        await downgrade(url, "payment", "payment_0004")
        assert await current_revisions(url, "payment") == {"payment_0004"}
        async with engine.begin() as conn:
            with pytest.raises(DBAPIError, match="status_valid"):
                await conn.execute(
                    text("UPDATE payments SET status = :status"),
                    {"status": PaymentStatus.PENDING.value},
                )
        await migrate(url, "payment")
        assert await is_at_head(url, "payment")
    finally:
        await engine.dispose()


async def _due_plan(conn: AsyncConnection) -> str:
    """The plan of the sweep's own statement, prepared as asyncpg prepares it, forced generic
    (what a prepared statement ends up with), sequential scans made unattractive (the table
    is tiny): the partial index must serve it whatever the parameters."""
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    await driver.execute("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
    statement = await driver.prepare(f"EXPLAIN {_DUE.sql}")
    rows = await statement.fetch(*_DUE.args(waiting_params(datetime.now(UTC), 100, None)))
    return "\n".join(row[0] for row in rows)


async def test_the_payment_service_reports_how_long_a_payment_has_waited(
    new_database: DatabaseFactory,
) -> None:
    """``payment_oldest_due_age_seconds``, sampled by the service while it runs (the sweep
    told to wait, so it leaves the payment due)."""
    url = await new_database.create("payment")
    engine = create_engine(url)
    dead = free_port()
    settings = Settings(
        database_url=url, kafka_bootstrap_servers=f"127.0.0.1:{dead}", payment_settle_after=3600
    )
    container = container_for("payment", settings)
    app = build_app(container)
    registry = container.metrics().registry
    try:
        clock = ManualClock(datetime.now(UTC) - timedelta(seconds=90))
        gateway = ScriptedGateway()
        gateway.down = True
        service = PaymentService(payment_uow_factory(engine), clock, gateway)
        await service.handle(new_envelope(reserved(uuid4()), clock.now(), None))
        async with app.router.lifespan_context(app):
            async with asyncio.timeout(10):  # the first sample is taken at start
                while (registry.get_sample_value("payment_oldest_due_age_seconds") or 0) < 90:
                    await asyncio.sleep(0.05)
            assert (registry.get_sample_value("payment_oldest_due_age_seconds") or 0) < 150
    finally:
        await engine.dispose()


class CountingGateway(ScriptedGateway):
    """Every call, kept (``charges`` keeps only the first per order, as deduplicated)."""

    def __init__(self) -> None:
        super().__init__(success_rate=1.0)
        self.calls: list[UUID] = []

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        self.calls.append(order_id)
        await asyncio.sleep(0.02)  # a remote gateway's time: two sweeps would overlap
        return await super().charge(order_id, amount, currency)


async def test_two_payment_replicas_sweep_one_at_a_time(new_database: DatabaseFactory) -> None:
    """Each would call the gateway for every due payment: with two, twice per payment."""
    url = await new_database.create("payment")
    engine = create_engine(url)
    try:
        clock = ManualClock()
        down = ScriptedGateway()
        down.down = True
        service = PaymentService(payment_uow_factory(engine), clock, down)
        orders = [uuid4() for _ in range(20)]
        await service.handle_batch([new_envelope(reserved(i), clock.now(), None) for i in orders])

        gateway = CountingGateway()
        dead = free_port()
        settings = Settings(
            database_url=url,
            kafka_bootstrap_servers=f"127.0.0.1:{dead}",
            payment_settle_after=0.001,
            payment_sweep_interval=0.01,
        )
        apps = [build_app(container_for("payment", settings, gateway=gateway)) for _ in range(2)]
        first, second = (app.router.lifespan_context(app) for app in apps)
        async with first, second, asyncio.timeout(20):
            while len(set(gateway.calls)) < len(orders) or await _due(engine):
                await asyncio.sleep(0.05)
        assert sorted(gateway.calls) == sorted(orders)  # each called once
    finally:
        await engine.dispose()


async def _due(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM payments WHERE status IN ('PENDING', 'REFUNDING')")
        return int((await conn.execute(query)).scalar_one())

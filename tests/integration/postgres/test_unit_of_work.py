"""Units of work: a lost database is an InfrastructureError (retry), never poison."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import asyncpg
import pytest
from adapters_postgres.engine import SessionGuards, create_engine, plain_url
from adapters_postgres.identity import order_lock_key
from adapters_postgres.uow import payment_uow_factory
from core_saga.ports import InfrastructureError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration


async def test_an_unreachable_database_is_an_infrastructure_error() -> None:
    engine = create_engine("postgresql://nobody@127.0.0.1:9/nowhere", connect_args={"timeout": 2})
    try:
        with pytest.raises(InfrastructureError):
            async with payment_uow_factory(engine)():
                pass
    finally:
        await engine.dispose()


async def test_a_connection_killed_mid_transaction_is_an_infrastructure_error(
    payment_engine: AsyncEngine,
) -> None:
    async def killed_midway() -> None:
        async with payment_uow_factory(payment_engine)() as uow:
            assert await uow.inbox.mark_processed(uuid4(), "StockReserved")
            pid = await uow.connection.scalar(text("SELECT pg_backend_pid()"))
            async with payment_engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await uow.payments.mark_cancelled(uuid4())
            await uow.commit()

    with pytest.raises(InfrastructureError):
        await killed_midway()


@pytest.mark.parametrize("setting", ["lock_timeout", "statement_timeout"])
async def test_a_lock_or_statement_timeout_is_an_infrastructure_error(
    payment_engine: AsyncEngine, setting: str
) -> None:
    """A timeout a database or role sets is the weather: the event is retried, not poison."""
    order_id = uuid4()
    async with payment_engine.connect() as holder:  # holds the order's lock until rollback
        key = {"key": order_lock_key(order_id)}
        await holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)

        async def blocked() -> None:
            async with payment_uow_factory(payment_engine)() as uow:
                await uow.connection.execute(text(f"SET LOCAL {setting} = '200ms'"))
                await uow.hold({order_id})

        with pytest.raises(InfrastructureError):
            await blocked()


async def test_a_constraint_violation_stays_what_it_is(payment_engine: AsyncEngine) -> None:
    async def insert_twice() -> None:
        async with payment_uow_factory(payment_engine)() as uow:
            query = text("INSERT INTO cancelled_orders (order_id) VALUES (:id)")
            order_id = uuid4()
            await uow.connection.execute(query, {"id": order_id})
            await uow.connection.execute(query, {"id": order_id})

    with pytest.raises(IntegrityError):
        await insert_twice()


async def test_after_the_server_dropped_pooled_connections_work_resumes(
    new_database: DatabaseFactory,
) -> None:
    """No pre-ping, yet no failure: a checkout drops the connections the server closed (each
    failed its next use once before, up to the pool's size after every failover)."""
    engine = create_engine(await new_database.create("payment"), pool_size=4, max_overflow=0)
    uow = payment_uow_factory(engine)

    async def cancel(order_id: UUID) -> None:
        async with uow() as work:
            await work.payments.mark_cancelled(order_id)
            await work.commit()

    try:
        await asyncio.gather(*(cancel(uuid4()) for _ in range(4)))  # four pooled connections
        admin = await asyncpg.connect(plain_url(engine.url.render_as_string(hide_password=False)))
        try:  # what a server restart or failover does to the idle connections
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        await asyncio.sleep(0.2)  # the sockets' ends reach this process
        placed = [uuid4() for _ in range(4)]
        for order_id in placed:  # one after another: each may take any pooled connection
            await cancel(order_id)
        async with uow() as work:
            assert [await work.payments.was_cancelled(each) for each in placed] == [True] * 4
    finally:
        await engine.dispose()


async def test_a_read_only_unit_of_work_reads_outside_any_transaction(
    payment_engine: AsyncEngine,
) -> None:
    """No BEGIN/ROLLBACK round trips for a one-statement read, and nothing to commit."""
    order_id = uuid4()
    async with payment_uow_factory(payment_engine)() as uow:
        await uow.payments.mark_cancelled(order_id)
        await uow.commit()

    async with payment_uow_factory(payment_engine, read_only=True)() as reader:
        assert await reader.payments.was_cancelled(order_id)
        driver = (await reader.connection.get_raw_connection()).driver_connection
        assert driver is not None
        assert not driver.is_in_transaction()  # asyncpg's view: no BEGIN was sent
        with pytest.raises(RuntimeError, match="cannot commit"):
            await reader.commit()


async def test_a_statement_that_waits_too_long_is_an_infrastructure_error(
    new_database: DatabaseFactory,
) -> None:
    """A lock behind a frozen peer, or a server gone mid-statement, fails in bounded time."""
    guards = SessionGuards(command_timeout=0.3)
    engine = create_engine(await new_database.create("payment"), connect_args=guards.connect_args())
    try:
        with pytest.raises(InfrastructureError):
            async with payment_uow_factory(engine)() as uow:
                await uow.connection.execute(text("SELECT pg_sleep(3)"))
    finally:
        await engine.dispose()


async def test_a_session_frozen_inside_a_transaction_loses_it_and_its_locks(
    new_database: DatabaseFactory,
) -> None:
    """A replica frozen (or cut off) mid-transaction held its order locks until TCP noticed,
    hours later: every other replica's batch on those orders waited behind it."""
    url = await new_database.create("payment")
    guards = SessionGuards(idle_in_transaction=0.5)
    frozen_engine = create_engine(url, connect_args=guards.connect_args())
    other = create_engine(url)
    order_id = uuid4()
    try:

        async def freeze_holding_the_order() -> None:
            async with payment_uow_factory(frozen_engine)() as uow:
                await uow.hold({order_id})
                await asyncio.sleep(2)  # frozen: no statement, transaction open
                await uow.payments.mark_cancelled(order_id)
                await uow.commit()

        frozen = asyncio.create_task(freeze_holding_the_order())
        await asyncio.sleep(0.2)
        async with other.connect() as conn:
            await conn.execute(text("SET lock_timeout = '5s'"))
            key = {"key": order_lock_key(order_id)}
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)
        with pytest.raises(InfrastructureError):
            await frozen
    finally:
        await frozen_engine.dispose()
        await other.dispose()

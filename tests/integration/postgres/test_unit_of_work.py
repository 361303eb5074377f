"""Units of work: a lost database is an InfrastructureError (retry), never poison."""

from __future__ import annotations

from uuid import uuid4

import pytest
from adapters_postgres.engine import create_engine
from adapters_postgres.uow import payment_uow_factory
from core_saga.ports import InfrastructureError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

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


async def test_a_constraint_violation_stays_what_it_is(payment_engine: AsyncEngine) -> None:
    async def insert_twice() -> None:
        async with payment_uow_factory(payment_engine)() as uow:
            query = text("INSERT INTO cancelled_orders (order_id) VALUES (:id)")
            order_id = uuid4()
            await uow.connection.execute(query, {"id": order_id})
            await uow.connection.execute(query, {"id": order_id})

    with pytest.raises(IntegrityError):
        await insert_twice()

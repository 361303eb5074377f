"""Statements sent on the driver connection fail, heal and are watched as SQLAlchemy's do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

import pytest
from adapters_postgres import raw
from adapters_postgres.uow import payment_uow_factory
from core_saga.ports import InfrastructureError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.integration


async def test_a_driver_error_is_a_sqlalchemy_error_carrying_its_sqlstate(
    payment_engine: AsyncEngine,
) -> None:
    async with payment_engine.begin() as conn:
        with pytest.raises(DBAPIError) as raised:
            await raw.fetch(conn, "SELECT 1 / $1::int", 0)
    assert raised.value.orig is not None
    assert getattr(raised.value.orig, "sqlstate", None) == "22012"  # division_by_zero
    assert not raised.value.connection_invalidated


async def test_a_connection_lost_under_a_driver_statement_is_infrastructure_and_replaced(
    payment_engine: AsyncEngine,
) -> None:
    async def killed_midway() -> None:
        async with payment_uow_factory(payment_engine)() as uow:
            pid = await uow.connection.scalar(text("SELECT pg_backend_pid()"))
            async with payment_engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await uow.inbox.mark_processed(uuid4(), "StockReserved")  # on the driver

    with pytest.raises(InfrastructureError):
        await killed_midway()
    for _ in range(3):  # the pool does not hand the dead connection out again
        async with payment_uow_factory(payment_engine)() as uow:
            assert await uow.inbox.mark_processed(uuid4(), "StockReserved")
            await uow.commit()


async def test_watchers_see_each_driver_statement_until_removed(
    payment_engine: AsyncEngine,
) -> None:
    seen: list[str] = []

    @contextmanager
    def watcher(sql: str) -> Iterator[None]:
        seen.append(sql)
        yield
        seen.append("done")

    unwatch = raw.watch_statements(payment_engine, watcher)
    async with payment_engine.begin() as conn:
        await raw.fetch(conn, "SELECT $1::int", 1)
        unwatch()
        await raw.fetch(conn, "SELECT $1::int", 2)
    assert seen == ["SELECT $1::int", "done"]

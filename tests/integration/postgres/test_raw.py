"""Statements sent on the driver connection fail, heal and are watched as SQLAlchemy's do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

import pytest
from adapters_postgres import raw
from adapters_postgres.uow import payment_uow_factory
from core_saga.ports import InfrastructureError
from sqlalchemy import ARRAY, Integer, Text, bindparam, func, literal_column, select, text
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.integration


async def test_a_driver_error_is_a_sqlalchemy_error_carrying_its_sqlstate(
    payment_engine: AsyncEngine,
) -> None:
    async with payment_engine.begin() as conn:
        with pytest.raises(DataError) as raised:
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


async def test_a_compiled_statement_orders_its_parameters_for_the_driver(
    payment_engine: AsyncEngine,
) -> None:
    first = bindparam("first", type_=Integer)
    statement = select(
        (first + bindparam("second", type_=Integer)).label("sum"),
        (first * literal_column("2")).label("twice"),
        func.array_length(bindparam("words", type_=ARRAY(Text)), 1).label("words"),
    )
    compiled = raw.Compiled(statement)
    assert compiled.args({"words": ("a", "b", "c"), "second": 5, "first": 2}) == [
        2,
        5,
        ["a", "b", "c"],  # the array's bind processor made the tuple a list, as SQLAlchemy does
        1,  # the literal SQLAlchemy bound itself
    ]
    async with payment_engine.begin() as conn:
        rows = await raw.fetch_compiled(conn, compiled, {"first": 2, "second": 5, "words": ["x"]})
    assert [tuple(row) for row in rows] == [(7, 4, 1)]

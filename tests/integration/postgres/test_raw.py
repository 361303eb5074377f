"""Statements sent on the driver connection fail, heal and are watched as SQLAlchemy's do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

import pytest
from adapters_postgres import raw
from adapters_postgres.uow import is_transient, payment_uow_factory
from core_saga.ports import InfrastructureError
from sqlalchemy import ARRAY, Integer, Text, bindparam, func, literal_column, select, text
from sqlalchemy.exc import DataError, OperationalError
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


async def test_a_connection_lost_before_its_transaction_began_is_a_lost_connection(
    payment_engine: AsyncEngine,
) -> None:
    """The driver sends the BEGIN itself there: its failure is SQLAlchemy's OperationalError
    with the connection invalidated (a consumer retries it), not the dialect's own error
    (which a consumer took for poison and dead-lettered)."""
    async with payment_engine.connect() as conn:
        pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        await conn.commit()  # no transaction now: the next driver statement begins one
        async with payment_engine.connect() as admin:
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as raised:
            await raw.fetch(conn, "SELECT 1")
    assert raised.value.connection_invalidated
    assert is_transient(raised.value)
    async with payment_engine.connect() as conn:  # the pool handed out a live one
        assert [tuple(row) for row in await raw.fetch(conn, "SELECT 1")] == [(1,)]


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

"""Statement helpers: typed placeholders, and many rows in one statement as one array per column."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from core_saga.ports import Position
from sqlalchemy import (
    BindParameter,
    Column,
    ColumnElement,
    Insert,
    Integer,
    RowMapping,
    Select,
    Table,
    TableValuedAlias,
    bindparam,
    column,
    func,
    insert,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.functions import Function


def array_param(target: Column[Any], name: str) -> BindParameter[Any]:
    """A placeholder for a list of ``target`` values (one PostgreSQL array)."""
    return bindparam(name, type_=ARRAY(target.type))


def unnest_params(name: str, *targets: Column[Any]) -> TableValuedAlias:
    """Rows ``name`` from one array parameter per column, named ``<name>_<column>``."""
    arrays = (array_param(target, f"{name}_{target.key}") for target in targets)
    return (
        func.unnest(*arrays)
        .table_valued(*(column(target.key, target.type) for target in targets))
        .render_derived(name=name)
    )


def unnest_rows(
    name: str, values: Sequence[Sequence[Any]], *targets: Column[Any]
) -> dict[str, Any]:
    """The parameters of ``unnest_params(name, *targets)`` for ``values``, one tuple per row."""
    columns = list(zip(*values, strict=True)) if values else [() for _ in targets]
    return {f"{name}_{target.key}": list(col) for target, col in zip(targets, columns, strict=True)}


def param(target: Column[Any], name: str | None = None) -> BindParameter[Any]:
    """A placeholder typed like ``target``, so asyncpg encodes it with the column's codec.

    In an UPDATE, a placeholder outside SET must not share a column's name: SQLAlchemy
    would take that parameter as a value for the column.
    """
    return bindparam(name or target.key, type_=target.type)


def every_column(table: Table, **given: BindParameter[Any]) -> dict[str, BindParameter[Any]]:
    """A placeholder named after each column of ``table`` (or the one ``given`` for it)."""
    return {each.key: given.get(each.key, param(each)) for each in table.c}


def array_agg_ordered(target: Column[Any], order_by: Column[Any]) -> Function[Any]:
    """``array_agg(target ORDER BY order_by)``, typed as an array of the column's type."""
    return func.array_agg(aggregate_order_by(target, order_by))


def where_given(query: Select[Any], where: ColumnElement[bool] | None) -> Select[Any]:
    """``query``, filtered by ``where`` when there is one (a row written only if it holds)."""
    return query if where is None else query.where(where)


Joined = Callable[[Select[Any]], Select[Any]]
"""A page's query with another table's columns added (an outer join)."""


def newest_page_query(
    table: Table,
    order_id: UUID | None,
    limit: int,
    before: Position | None = None,
    *,
    joined: Joined | None = None,
) -> Select[Any]:
    """``newest_page``'s statement. ``before`` is one row-value comparison, ``(created_at, id)
    < (:t, :id)``: the ``(created_at, id)`` index starts its backward scan there, which two
    column comparisons joined by OR would not let it do. ``joined`` adds to each row what
    another table says of it."""
    query = select(table) if joined is None else joined(select(table))
    query = query.order_by(table.c.created_at.desc(), table.c.id.desc()).limit(limit)
    if order_id is not None:
        query = query.where(table.c.order_id == order_id)
    if before is not None:
        query = query.where(tuple_(table.c.created_at, table.c.id) < before)
    return query


async def newest_page(
    conn: AsyncConnection,
    table: Table,
    order_id: UUID | None,
    limit: int,
    before: Position | None = None,
    *,
    joined: Joined | None = None,
) -> list[RowMapping]:
    """The newest ``limit`` rows of ``table`` (of one order, if given; older than ``before``,
    if given), oldest first: read newest first along its ``(created_at, id)`` index, so that
    LIMIT keeps them, then reversed.
    """
    query = newest_page_query(table, order_id, limit, before, joined=joined)
    rows = [row._mapping for row in await conn.execute(query)]
    return rows[::-1]


FIRST: Final[Position] = (datetime(1, 1, 1, tzinfo=UTC), UUID(int=0))
"""Before every ``(at, id)``: where ``oldest_waiting`` starts without an ``after``."""


def oldest_waiting(query: Select[Any], at: Column[Any], id_: Column[Any]) -> Select[Any]:
    """``query`` as a sweep's keyset page: the rows waiting since ``:before`` or earlier,
    after ``(:after_at, :after_id)``, oldest first by ``(at, id)``, ``:limit`` of them
    (``waiting_params``), read along an ``(at, id)`` index."""
    after = tuple_(param(at, "after_at"), param(id_, "after_id"))
    return (
        query.where(at <= param(at, "before"), tuple_(at, id_) > after)
        .order_by(at, id_)
        .limit(bindparam("limit", type_=Integer))
    )


def waiting_params(before: datetime, limit: int, after: Position | None) -> dict[str, Any]:
    """The parameters of an ``oldest_waiting`` page."""
    after_at, after_id = after or FIRST
    return {"before": before, "limit": limit, "after_at": after_at, "after_id": after_id}


def insert_children(
    target: Table,
    name: str,
    parent: BindParameter[Any],
    *targets: Column[Any],
    where: ColumnElement[bool] | None = None,
) -> Insert:
    """``INSERT INTO target SELECT :order_id, … FROM unnest(…) [WHERE …]``: a parent's rows."""
    rows = select(parent, *unnest_params(name, *targets).c)
    keys = ["order_id", *(each.key for each in targets)]
    return insert(target).from_select(keys, where_given(rows, where))


def insert_unnested(
    target: Table, name: str, *targets: Column[Any], unique: Column[Any]
) -> pg.Insert:
    """``INSERT INTO target (…) SELECT * FROM unnest(…) ON CONFLICT (unique) DO NOTHING``:
    many rows in one statement, a row already there skipped (add ``.returning`` to learn
    which went in)."""
    keys = [each.key for each in targets]
    rows = select(*unnest_params(name, *targets).c)
    return pg.insert(target).from_select(keys, rows).on_conflict_do_nothing(index_elements=[unique])

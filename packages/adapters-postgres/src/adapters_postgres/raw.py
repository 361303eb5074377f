"""The hottest statements, straight on asyncpg inside the unit of work's transaction.

Every transaction that emits or consumes an event runs a few of the same statements (the
outbox rows, the inbox marks, the order locks, the repositories' reads and writes). Through
SQLAlchemy's execution each cost about 400 µs of CPU, against 140 µs for the same SQL on
the asyncpg connection underneath (2,000 one-row inbox inserts, measured on the default
event loop): compile-cache lookup, parameter processing and result wrapping, all in
Python. The statements are still built from the table objects, compiled once
(``Compiled``); ``fetch`` also takes plain SQL with ``$n`` parameters (the relay's).

Two things SQLAlchemy gave for free are kept:

- errors: a driver error becomes the ``DBAPIError`` subclass SQLAlchemy would raise (an
  ``IntegrityError`` for a violated constraint; the original, with its SQLSTATE, as
  ``orig``), and a lost connection is invalidated first, so the units of work and the
  pool treat it exactly as one raised by SQLAlchemy;
- observability: ``watch_statements`` registers, per engine, a context manager entered
  around each statement (the tracing module opens a span in it; tests record the SQL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from typing import Any
from weakref import WeakKeyDictionary

import asyncpg
from sqlalchemy import BindParameter, ClauseElement
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Engine
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters_postgres.engine import driver

StatementWatcher = Callable[[str], AbstractContextManager[object]]

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]

_watchers: WeakKeyDictionary[Engine, list[StatementWatcher]] = WeakKeyDictionary()

# SQLSTATEs of a server that ended the session (class 08: connection exception; 57P0x: an
# administrator or a crash terminated the backend).
_ENDED = ("08", "57P01", "57P02", "57P03")


def watch_statements(engine: AsyncEngine, watcher: StatementWatcher) -> Callable[[], None]:
    """Enter ``watcher(sql)`` around every statement sent here on ``engine``; undo with the
    returned function."""
    watchers = _watchers.setdefault(engine.sync_engine, [])
    watchers.append(watcher)
    return lambda: watchers.remove(watcher)


class Compiled:
    """A prebuilt SQLAlchemy statement compiled once for asyncpg: its SQL and parameter order.

    So a statement written with the table objects (CTEs, lateral joins, typed arrays) runs
    on the driver too: ``args`` orders a parameter dict as the ``$n`` placeholders want it,
    through the type's bind processor where it has one, as SQLAlchemy would.
    """

    def __init__(self, statement: ClauseElement) -> None:
        compiled: Any = statement.compile(dialect=_DIALECT)  # an SQLCompiler
        self.sql = str(compiled)
        names = tuple(compiled.positiontup or ())
        self._binds = [(name, _processor(compiled.binds[name])) for name in names]
        # literals SQLAlchemy binds itself (``func.f(x, 1)``): their values, unless given
        self._fixed = {
            name: bind.effective_value
            for name, bind in compiled.binds.items()
            if name in names and not bind.required
        }

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        if self._fixed:
            params = {**self._fixed, **params}
        return [
            params[name] if process is None else process(params[name])
            for name, process in self._binds
        ]


def _processor(bind: BindParameter[Any]) -> Callable[[Any], Any] | None:
    """What SQLAlchemy applies to the value for asyncpg: the type's, as the dialect has it."""
    return bind.type.dialect_impl(_DIALECT).bind_processor(_DIALECT)


async def fetch(
    conn: AsyncConnection, sql: str, *args: Any, begin: bool = True
) -> list[asyncpg.Record]:
    """The rows of ``sql`` run on ``conn``'s driver connection, in its transaction; with
    ``begin=False`` outside any (see ``engine.driver``)."""
    rows: list[asyncpg.Record] = await _run(
        conn, sql, lambda raw: raw.fetch(sql, *args), args, begin=begin
    )
    return rows


async def fetch_compiled(
    conn: AsyncConnection, statement: Compiled, params: Mapping[str, Any], *, begin: bool = True
) -> list[asyncpg.Record]:
    return await fetch(conn, statement.sql, *statement.args(params), begin=begin)


async def execute_many(
    conn: AsyncConnection, statement: Compiled, params: Sequence[Mapping[str, Any]]
) -> None:
    """``statement`` once per parameter set, sent together (one round trip)."""
    sets = [statement.args(each) for each in params]
    await _run(conn, statement.sql, lambda raw: raw.executemany(statement.sql, sets), sets)


async def _run(
    conn: AsyncConnection,
    sql: str,
    call: Callable[[asyncpg.Connection], Awaitable[Any]],
    args: Sequence[Any],
    *,
    begin: bool = True,
) -> Any:
    raw = None
    try:
        raw = await driver(conn, begin=begin)
        with ExitStack() as around:
            for watcher in _watchers.get(conn.sync_engine, ()):
                around.enter_context(watcher(sql))
            return await call(raw)
    except Exception as exc:
        # No driver connection yet: the BEGIN it sends failed (with the dialect's own error,
        # which SQLAlchemy wraps only around what it sends itself), and a BEGIN fails only
        # when the connection does (closed, or left mid-operation by a dropped session).
        lost = raw is None or _lost(raw, exc)
        if lost:
            await conn.invalidate(exc)
        raise _translated(exc, lost)(sql, args, exc, connection_invalidated=lost) from exc


# As SQLAlchemy's asyncpg dialect translates them, so callers catch the same classes.
_TRANSLATIONS: tuple[tuple[type[Exception], type[DBAPIError]], ...] = (
    (asyncpg.IntegrityConstraintViolationError, IntegrityError),
    (asyncpg.exceptions.SyntaxOrAccessError, ProgrammingError),
    (asyncpg.exceptions.DataError, DataError),
    (asyncpg.InterfaceError, InterfaceError),
)


def _translated(exc: Exception, lost: bool) -> type[DBAPIError]:
    for driver_error, translated in _TRANSLATIONS:
        if isinstance(exc, driver_error):
            return translated
    return OperationalError if lost else DBAPIError


def _lost(raw: asyncpg.Connection, exc: Exception) -> bool:
    """Whether the connection, not just the statement, failed: the pool must drop it.

    Anything but an error the server reported for the statement counts (a closed socket,
    or the protocol state asyncpg is left in when the server ends the session mid-way).
    """
    if raw.is_closed() or not isinstance(exc, asyncpg.PostgresError):
        return True
    return str(getattr(exc, "sqlstate", "")).startswith(_ENDED)

"""The hottest statements, straight on asyncpg inside the unit of work's transaction.

Every transaction that emits or consumes an event runs a few of the same statements (the
outbox rows, the inbox marks, the order locks). Through SQLAlchemy Core each cost about
400 µs of CPU, against 140 µs for the same SQL on the asyncpg connection underneath
(2,000 one-row inbox inserts, measured): compile-cache lookup, parameter processing and
result wrapping, all in Python. Statements sent here are plain SQL with ``$n`` parameters.

Two things SQLAlchemy gave for free are kept:

- errors: a driver error becomes SQLAlchemy's ``DBAPIError`` (with the original, and its
  SQLSTATE, as ``orig``), and a lost connection is invalidated first, so the units of work
  and the pool treat it exactly as one raised by SQLAlchemy;
- observability: ``watch_statements`` registers, per engine, a context manager entered
  around each statement (the tracing module opens a span in it; tests record the SQL).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Any
from weakref import WeakKeyDictionary

import asyncpg
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters_postgres.engine import driver

StatementWatcher = Callable[[str], AbstractContextManager[object]]

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


async def fetch(conn: AsyncConnection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of ``sql`` run on ``conn``'s driver connection, in its transaction."""
    raw = await driver(conn)
    watchers = _watchers.get(conn.sync_engine)
    try:
        if not watchers:
            rows: list[asyncpg.Record] = await raw.fetch(sql, *args)
            return rows
        with ExitStack() as around:
            for watcher in watchers:
                around.enter_context(watcher(sql))
            rows = await raw.fetch(sql, *args)
            return rows
    except Exception as exc:
        lost = _lost(raw, exc)
        if lost:
            await conn.invalidate(exc)
        raise DBAPIError.instance(sql, args, exc, Exception, connection_invalidated=lost) from exc


def _lost(raw: asyncpg.Connection, exc: Exception) -> bool:
    """Whether the connection, not just the statement, failed: the pool must drop it.

    Anything but an error the server reported for the statement counts (a closed socket,
    or the protocol state asyncpg is left in when the server ends the session mid-way).
    """
    if raw.is_closed() or not isinstance(exc, asyncpg.PostgresError):
        return True
    return str(getattr(exc, "sqlstate", "")).startswith(_ENDED)

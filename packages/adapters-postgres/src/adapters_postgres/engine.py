"""Async engines for a service database: URLs, pool sizing, creating and dropping databases."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

DRIVER: Final = "postgresql+asyncpg"
# The server notices a vanished client host within about 25 s (10 idle + 3 probes 5 s apart).
KEEPALIVES: Final = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
}


def async_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` / other drivers → ``postgresql+asyncpg://``.

    libpq's ``sslmode`` (as managed servers' URLs give it) becomes asyncpg's ``ssl``, which
    takes the same values: SQLAlchemy hands the URL's options to ``asyncpg.connect`` as
    arguments, and it has no ``sslmode`` ("unexpected keyword argument").
    """
    parsed = _renamed(_postgres(url), "sslmode", "ssl")
    return parsed.set(drivername=DRIVER).render_as_string(hide_password=False)


def plain_url(url: str) -> str:
    """The libpq form (``postgresql://``, ``sslmode``) for tools that are not SQLAlchemy."""
    parsed = _renamed(_postgres(url), "ssl", "sslmode")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def _postgres(url: str) -> URL:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string()}")
    return parsed


def _renamed(url: URL, option: str, to: str) -> URL:
    """``url`` with its query option ``option`` named ``to`` (unless both are given)."""
    if option not in url.query or to in url.query:
        return url
    query = dict(url.query)
    query[to] = query.pop(option)
    return url.set(query=query)


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


DRIVER_OPTIONS = frozenset(inspect.signature(asyncpg.connect).parameters) | {
    "prepared_statement_cache_size",  # SQLAlchemy's asyncpg dialect takes this one itself
}
"""The URL options SQLAlchemy may hand to ``asyncpg.connect`` as arguments. The others
(libpq's ``sslrootcert``, ``application_name``, ``options`` …) asyncpg reads from a DSN
only: as arguments it refused them, and every connection of such a URL failed."""


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 0,
    application_name: str | None = None,
    **options: Any,
) -> AsyncEngine:
    """An asyncpg engine; small pools, because every replica of four services shares one server.

    No overflow: an overflow connection is closed as soon as it is returned to a full pool,
    so under load every burst opened new ones (a backend forked, asyncpg's type set-up, every
    statement prepared again): 172 connections in a 1,000-order run of the order service.
    The same ten connections at most, all kept, cost none of that.

    No ``pool_pre_ping``: it costs a round trip on every checkout (a quarter of all statements
    under load). Instead a checkout drops a connection whose socket the server already
    closed (a restart or failover ends every session), which costs no round trip; without
    that, each pooled connection failed its next use once after a failover. One that dies
    unseen fails its next use, which the unit of work reports as an ``InfrastructureError``,
    so consumers retry the message.

    ``application_name`` names the sessions in ``pg_stat_activity`` (and in the server's
    log lines), so that an operator can tell whose connection holds a lock; one in the URL
    (``?application_name=…``) wins.
    """
    if "poolclass" not in options:  # NullPool and friends take no sizes
        options.update(pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800)
    # A failed statement's error names its SQL, not its parameters: they hold customers'
    # orders and stored responses, and the error reaches logs and dead letters.
    options.setdefault("hide_parameters", True)
    parsed = make_url(async_url(url))
    libpq = {name: value for name, value in parsed.query.items() if name not in DRIVER_OPTIONS}
    if application_name is not None:
        libpq.setdefault("application_name", application_name)
    if libpq:  # asyncpg reads a DSN beside the arguments SQLAlchemy gives it
        parsed = parsed.difference_update_query(libpq)
        dsn = make_url("postgresql://").set(query=libpq).render_as_string()
        options["connect_args"] = {"dsn": dsn, **options.get("connect_args", {})}
    engine = _create_async_engine(parsed, **options)
    event.listen(engine.sync_engine.pool, "checkout", _drop_closed)
    return engine


def _drop_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Raising ``DisconnectionError`` makes the pool discard the connection and check out
    another (a new one if need be)."""
    driver_connection = getattr(dbapi_connection, "driver_connection", None)
    if driver_connection is not None and driver_connection.is_closed():
        raise DisconnectionError("the server closed this connection")


@dataclass(frozen=True)
class SessionGuards:
    """Bounds on how long a service's session may hang, for its pooled engine.

    ``command_timeout`` (the client's): a statement that waits longer (a lock behind a
    frozen peer, a server that vanished mid-statement: TCP alone would give up after about
    15 minutes) fails as a ``TimeoutError``, which units of work report as an
    ``InfrastructureError`` to retry. ``idle_in_transaction`` (the server's): a client frozen
    or cut off inside a transaction loses it, and the row and advisory locks it held,
    instead of keeping them until TCP notices (about 2 hours by Linux defaults); the
    keepalives have the server notice a vanished client within about 25 s. Not for
    migrations: a concurrent index build may rightly take longer.
    """

    command_timeout: float = 30.0
    idle_in_transaction: float = 60.0

    def connect_args(self) -> dict[str, Any]:
        session = {
            "idle_in_transaction_session_timeout": str(round(self.idle_in_transaction * 1000)),
            **{name: str(value) for name, value in KEEPALIVES.items()},
        }
        return {"command_timeout": self.command_timeout, "server_settings": session}


_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_UNLOCK = text("SELECT pg_advisory_unlock(:key)")


def named_lock_key(name: str) -> int:
    """A session advisory lock key for a named role (signed 64 bits, stable across versions)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@asynccontextmanager
async def try_session_lock(engine: AsyncEngine, key: int) -> AsyncIterator[bool]:
    """Whether this process holds the session advisory lock ``key`` (on a pooled connection
    of its own, outside any transaction) for the block; released at its end, or by the
    server when the connection dies. Tried once, never waited for (``poll_advisory_lock``)."""
    async with engine.connect() as conn:
        taken = bool(await conn.scalar(_TRY_LOCK, {"key": key}))
        await conn.rollback()  # no transaction, no snapshot, held while the block runs
        try:
            yield taken
        finally:
            if taken:
                await conn.scalar(_UNLOCK, {"key": key})
                await conn.rollback()


async def poll_advisory_lock(conn: AsyncConnection, key: int, every: float) -> None:
    """Take the session advisory lock ``key`` on ``conn``, trying every ``every`` seconds.

    Tried, not waited for in ``pg_advisory_lock``: a statement that waits holds a snapshot
    all that time, which stops VACUUM from clearing the database's dead rows and makes any
    ``CREATE INDEX CONCURRENTLY`` there wait for the waiter. Each try ends its transaction
    (none on an autocommit connection), so nothing is held between tries.
    """
    while True:  # polled: PostgreSQL has no event for a lock freed
        taken = await conn.scalar(_TRY_LOCK, {"key": key})
        await conn.rollback()
        if taken:
            return
        await asyncio.sleep(every)


@asynccontextmanager
async def transaction(bind: AsyncEngine | AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """A short transaction of its own: on a connection of the engine's pool, or on the given
    connection, which must then be in autocommit mode (each statement commits alone)."""
    if isinstance(bind, AsyncConnection):
        yield bind
    else:
        async with bind.begin() as conn:
            yield conn


async def driver(conn: AsyncConnection, *, begin: bool = True) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, inside ``conn``'s transaction if it has one.

    For hot statements whose rows SQLAlchemy would process one by one in Python. SQLAlchemy
    begins a transaction with its next statement after a commit (autobegin) and sends
    ``BEGIN`` lazily: both are done here when still due, so a statement sent here is never
    outside the transaction it was meant for (on an ``AUTOCOMMIT`` connection there is
    none to begin). With ``begin=False`` a transaction not yet begun on the server is left
    so: a statement then commits on its own (``begun`` tells). The adapter's transaction
    start is private API, as in SQLAlchemy 2.0 and 2.1: the package requires below 2.2.
    """
    if not conn.in_transaction():
        await conn.begin()
    fairy = await conn.get_raw_connection()
    adapted: Any = fairy.dbapi_connection
    if begin and not adapted.autocommit and adapted._transaction is None:
        await adapted._start_transaction()  # raises the dialect's own error: see raw._run
    raw: asyncpg.Connection = fairy.driver_connection
    return raw


async def begun(conn: AsyncConnection) -> bool:
    """Whether a transaction is open on the server for ``conn`` (its ``BEGIN`` was sent)."""
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    return bool(raw.is_in_transaction())


async def create_databases(admin_url: str, names: Iterable[str]) -> list[str]:
    """``CREATE DATABASE`` for each missing name (it cannot run inside a transaction); return
    the names created."""
    created = []
    conn = await asyncpg.connect(plain_url(admin_url))
    try:
        for name in names:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{_identifier(name)}"')
                created.append(name)
    finally:
        await conn.close()
    return created


async def drop_database(admin_url: str, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    conn = await asyncpg.connect(plain_url(admin_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{_identifier(name)}" WITH (FORCE)')
    finally:
        await conn.close()


def _identifier(name: str) -> str:
    if not name or '"' in name or "\x00" in name:
        raise ValueError(f"not a usable database name: {name!r}")
    return name

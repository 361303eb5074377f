"""Alembic migrations per service database, run from code: upgrade, downgrade, at-head check.

Each service has its own script directory (``migrations/<service>/versions``) and its own
``alembic_version`` table in its own database. ``migrate`` holds a session-level advisory
lock, so replicas that start together upgrade one after the other.

A revision's statements wait at most ``lock_timeout`` for a table lock: an ``ALTER TABLE``
queued behind a long transaction would otherwise queue every writer of that table behind
itself for as long. The revision is then rolled back and tried again after a pause, for up
to ``retry_for`` seconds, while the writers go on. Concurrent index builds are exempt
(``common.create_index_concurrently``): they wait without blocking anyone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from core_saga.relay import RelayBackoff
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

from adapters_postgres.engine import create_engine, poll_advisory_lock
from adapters_postgres.tables import SERVICES
from adapters_postgres.uow import LOCK_NOT_AVAILABLE

HERE: Final = Path(__file__).resolve().parent
MIGRATION_LOCK: Final = 0x636F6D6D6D696772  # advisory lock key: "commmigr"
LOCK_POLL: Final = 0.2  # seconds between two tries of a replica waiting for the lock
LOCK_TIMEOUT: Final = 2.0  # seconds a revision's statement may queue writers behind it
RETRY_FOR: Final = 300.0  # seconds to keep retrying a revision that timed out on a lock
RETRY_BACKOFF: Final = RelayBackoff(initial=0.5, maximum=10.0)

log = logging.getLogger(__name__)


def alembic_config(service: str, connection: Connection | None = None) -> Config:
    """The alembic ``Config`` of one service (also for ``command.revision`` by hand)."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; expected one of {SERVICES}")
    config = Config()
    config.set_main_option("script_location", str(HERE / service).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def run_environment() -> None:
    """The body of every ``env.py``: migrate on the connection in ``config.attributes``.

    One transaction per revision: a revision that builds an index concurrently leaves its
    transaction (``autocommit_block``), which commits what precedes it in the run; each
    revision's ``alembic_version`` update commits with that revision's own changes.
    """
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through adapters_postgres.migrations.migrate()")
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


@asynccontextmanager
async def _engine(target: str | AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """The given engine, or a one-connection engine for a URL, disposed afterwards."""
    if not isinstance(target, str):
        yield target
        return
    engine = create_engine(target, poolclass=NullPool, application_name="commerce-migrate")
    try:
        yield engine
    finally:
        await engine.dispose()


async def _run(
    target: str | AsyncEngine,
    service: str,
    revision: str,
    *,
    up: bool,
    lock_timeout: float = LOCK_TIMEOUT,
    retry_for: float = RETRY_FOR,
) -> None:
    def run(sync: Connection) -> None:
        config = alembic_config(service, sync)
        if up:
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)

    async with (
        _engine(target) as engine,
        engine.connect() as conn,
        _migration_lock(conn),
        _lock_timeout(conn, lock_timeout),
    ):
        give_up = time.monotonic() + retry_for
        attempt = 0
        while True:
            try:
                await conn.run_sync(run)
                return
            except Exception as exc:
                if _hides_cancellation(exc):
                    raise asyncio.CancelledError from exc
                attempt += 1
                delay = RETRY_BACKOFF.delay(attempt)
                if not _timed_out_on_a_lock(exc) or time.monotonic() + delay > give_up:
                    raise
                await conn.rollback()
                log.warning(
                    "%s migration: a table stayed locked for %.1fs; the revision is tried again"
                    " in %.1fs (%s)",
                    service,
                    lock_timeout,
                    delay,
                    exc.orig if isinstance(exc, DBAPIError) else exc,
                )
                await asyncio.sleep(delay)


def _timed_out_on_a_lock(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


@asynccontextmanager
async def _lock_timeout(conn: AsyncConnection, seconds: float) -> AsyncIterator[None]:
    """``lock_timeout`` for the session, across the revisions' transactions; reset after, as
    ``conn`` may go back to the pool of an engine the caller passed."""
    await conn.execute(text(f"SET lock_timeout = '{round(seconds * 1000)}ms'"))
    await conn.commit()
    try:
        yield
    finally:
        await _undo(conn, "RESET lock_timeout")


def _hides_cancellation(exc: BaseException) -> bool:
    """Cancelled inside an ``autocommit_block``, alembic's clean-up fails on the connection
    the cancellation invalidated; its error must not turn the cancellation into a failure."""
    context: BaseException | None = exc
    while context is not None and not isinstance(context, asyncio.CancelledError):
        context = context.__context__
    return context is not None


@asynccontextmanager
async def _migration_lock(conn: AsyncConnection) -> AsyncIterator[None]:
    """The migration lock, held by ``conn``'s session across the revisions' transactions.

    On the migrating connection itself: ``CREATE INDEX CONCURRENTLY`` waits for every other
    transaction of the database that holds a snapshot, never for its own session; polled
    (``poll_advisory_lock``), as a replica waiting in ``pg_advisory_lock`` would hold a
    snapshot that another replica's build waits for, while it waits for that build's lock.
    """
    await poll_advisory_lock(conn, MIGRATION_LOCK, LOCK_POLL)
    try:
        yield
    finally:
        await _undo(conn, f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")


async def _undo(conn: AsyncConnection, statement: str) -> None:
    """Undo a session's setting or lock, past a failed revision's transaction; nothing to
    undo once the connection is invalidated (its session, and what it held, are gone)."""
    if not conn.invalidated:
        await conn.rollback()
        await conn.execute(text(statement))
        await conn.commit()


async def migrate(
    target: str | AsyncEngine,
    service: str,
    revision: str = "head",
    *,
    lock_timeout: float = LOCK_TIMEOUT,
    retry_for: float = RETRY_FOR,
) -> None:
    """Upgrade ``service``'s database (a URL or an engine) to ``revision``: one transaction per
    revision, an index on an existing table built concurrently between two of them; a
    revision that waited ``lock_timeout`` for a lock is tried again for ``retry_for`` s."""
    await _run(target, service, revision, up=True, lock_timeout=lock_timeout, retry_for=retry_for)


async def downgrade(target: str | AsyncEngine, service: str, revision: str = "base") -> None:
    """Downgrade ``service``'s database to ``revision`` (``base`` drops every table), with the
    same ``LOCK_TIMEOUT`` and retries for ``RETRY_FOR`` as ``migrate``."""
    await _run(target, service, revision, up=False)


@functools.cache
def head_revisions(service: str) -> frozenset[str]:
    """The newest revisions this code knows; read once (alembic loads every script to tell)."""
    return frozenset(ScriptDirectory.from_config(alembic_config(service)).get_heads())


async def current_revisions(target: str | AsyncEngine, service: str) -> set[str]:
    """What the database's ``alembic_version`` says (empty before the first migration)."""
    async with _engine(target) as engine, engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: set(MigrationContext.configure(sync).get_current_heads())
        )


async def is_at_head(target: str | AsyncEngine, service: str) -> bool:
    """The database is at exactly the newest revision this code knows."""
    return await current_revisions(target, service) == head_revisions(service)


@functools.cache
def known_revisions(service: str) -> frozenset[str]:
    """Every revision this code has a script for."""
    scripts = ScriptDirectory.from_config(alembic_config(service))
    return frozenset(script.revision for script in scripts.walk_revisions())


async def is_migrated(target: str | AsyncEngine, service: str) -> bool:
    """Readiness: the database has every revision this code needs: it is at this code's head,
    or at a revision this code has no script for, which a newer release applied.

    During a rolling upgrade ``commerce migrate`` runs before the new replicas start, so the
    old ones must stay ready on the newer schema (migrations here only add, columns with
    defaults, tables, indexes, or widen, as int4 to bigint); at exactly the head they would
    all answer 503 at once.
    """
    current = await current_revisions(target, service)
    if not current:
        return False
    return current == head_revisions(service) or not current <= known_revisions(service)


__all__ = [
    "SERVICES",
    "alembic_config",
    "current_revisions",
    "downgrade",
    "head_revisions",
    "is_at_head",
    "is_migrated",
    "known_revisions",
    "migrate",
]

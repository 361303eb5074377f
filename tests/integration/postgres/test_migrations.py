"""Migrations: upgrade, downgrade and upgrade again; the result matches tables.py exactly;
indexes on existing tables built without blocking writers, re-runnable, one replica at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import NamedTuple

import pytest
from adapters_postgres.engine import create_engine
from adapters_postgres.inventory_repositories import PostgresProductRepository
from adapters_postgres.migrations import (
    SERVICES,
    current_revisions,
    downgrade,
    head_revisions,
    is_at_head,
    is_migrated,
    migrate,
)
from adapters_postgres.tables import METADATA
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from core_saga.inventory import SEED_PRODUCTS
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.postgres import DatabaseFactory
from tests.integration.postgres.conftest import wait_for_lock_waiters

pytestmark = pytest.mark.integration


def _tables(sync: Connection) -> set[str]:
    return set(inspect(sync).get_table_names()) - {"alembic_version"}


@pytest.mark.parametrize("service", SERVICES)
async def test_upgrade_downgrade_upgrade_on_an_empty_database(
    new_database: DatabaseFactory, service: str
) -> None:
    url = await new_database.create()
    assert not await is_at_head(url, service)

    await migrate(url, service)
    assert await is_at_head(url, service)
    assert await current_revisions(url, service) == head_revisions(service)

    await downgrade(url, service)
    assert await current_revisions(url, service) == set()
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()

        await migrate(url, service)
        assert await is_at_head(url, service)
        async with engine.connect() as conn:
            assert await conn.run_sync(_tables) == set(METADATA[service].tables)
    finally:
        await engine.dispose()


def _inbox_indexes(sync: Connection) -> set[str]:
    return {index["name"] or "" for index in inspect(sync).get_indexes("processed_events")}


INBOX_INDEX = "processed_events_processed_at_idx"

BEFORE_INBOX_INDEX = {
    "order": "order_0001",
    "inventory": "inventory_0002",
    "payment": "payment_0001",
    "notification": "notification_0001",
}
LATER_TABLES = {"notification": {"notifications_unsent"}}  # created after that revision


@pytest.mark.parametrize("service", SERVICES)
async def test_the_inbox_index_revision_goes_down_and_up_again(
    new_database: DatabaseFactory, service: str
) -> None:
    """Down to the revision before it drops the inbox's ``processed_at`` index and keeps
    every table but those created later; up again brings it back."""
    url = await new_database.create(service)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert "processed_events_processed_at_idx" in await conn.run_sync(_inbox_indexes)

        await downgrade(url, service, BEFORE_INBOX_INDEX[service])
        assert await current_revisions(url, service) == {BEFORE_INBOX_INDEX[service]}
        async with engine.connect() as conn:
            assert "processed_events_processed_at_idx" not in await conn.run_sync(_inbox_indexes)
            kept = set(METADATA[service].tables) - LATER_TABLES.get(service, set())
            assert await conn.run_sync(_tables) == kept

        await migrate(url, service)
        assert await is_at_head(url, service)
        async with engine.connect() as conn:
            assert "processed_events_processed_at_idx" in await conn.run_sync(_inbox_indexes)
    finally:
        await engine.dispose()


async def test_readiness_accepts_a_newer_schema_but_not_an_older_one(
    new_database: DatabaseFactory,
) -> None:
    """A rolling upgrade migrates first: the old release's replicas stay ready on a revision
    they have no script for; a database behind this code's head is not ready."""
    url = await new_database.create()
    assert not await is_migrated(url, "payment")  # nothing applied yet
    await migrate(url, "payment", "payment_0001")
    assert not await is_migrated(url, "payment")  # behind
    await migrate(url, "payment")
    assert await is_migrated(url, "payment")  # at head
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:  # as a newer release's migration would leave it
            await conn.execute(text("UPDATE alembic_version SET version_num = 'payment_9999'"))
    finally:
        await engine.dispose()
    assert await is_migrated(url, "payment")
    assert not await is_at_head(url, "payment")


@pytest.mark.parametrize("service", SERVICES)
async def test_migrated_schema_matches_the_tables_the_adapters_query(
    service_databases: dict[str, str], service: str
) -> None:
    def differences(sync: Connection) -> list[object]:
        context = MigrationContext.configure(sync, opts={"compare_type": True})
        return list(compare_metadata(context, METADATA[service]))

    engine = create_engine(service_databases[service])
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()


async def test_migrations_seed_the_five_products(service_databases: dict[str, str]) -> None:
    engine = create_engine(service_databases["inventory"])
    try:
        async with engine.connect() as conn:
            assert list(await PostgresProductRepository(conn).list()) == list(SEED_PRODUCTS)
    finally:
        await engine.dispose()


async def test_concurrent_migrations_serialise(new_database: DatabaseFactory) -> None:
    """Replicas starting together: the advisory lock lets one upgrade, the rest find it done."""
    url = await new_database.create()
    await asyncio.gather(*(migrate(url, "order") for _ in range(3)))
    assert await is_at_head(url, "order")
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM alembic_version"))
        assert count == 1
    finally:
        await engine.dispose()


class IndexRevision(NamedTuple):
    """A revision that indexes a table which already has rows and writers."""

    service: str
    before: str
    revision: str
    table: str
    index: str
    columns: str


INBOX = ("processed_events", INBOX_INDEX, "processed_at")
PAYMENTS = ("payments", "payments_created_at_idx", "created_at, id")
NOTIFICATIONS = ("notifications", "notifications_created_at_idx", "created_at, id")
LINES = ("reservation_lines", "reservation_lines_product_id_idx", "product_id")
INDEX_REVISIONS = [
    pytest.param(IndexRevision(service, before, revision, *index), id=revision)
    for service, before, revision, index in (
        ("order", "order_0001", "order_0002", INBOX),
        ("inventory", "inventory_0002", "inventory_0003", INBOX),
        ("inventory", "inventory_0003", "inventory_0004", LINES),
        ("payment", "payment_0001", "payment_0002", INBOX),
        ("payment", "payment_0002", "payment_0003", PAYMENTS),
        ("notification", "notification_0001", "notification_0002", INBOX),
        ("notification", "notification_0002", "notification_0003", NOTIFICATIONS),
    )
]

INSERTS = {  # one row into the table, as a writer of the running service would add it
    "processed_events": "INSERT INTO processed_events (event_id, event_type)"
    " VALUES (gen_random_uuid(), 'Test')",
    "reservation_lines": "WITH r AS (INSERT INTO reservations (order_id, status)"
    " VALUES (gen_random_uuid(), 'RELEASED') RETURNING order_id)"
    " INSERT INTO reservation_lines (order_id, product_id, quantity)"
    " SELECT order_id, '11111111-1111-1111-1111-111111111111', 1 FROM r",
    "payments": "INSERT INTO payments (id, order_id, amount, currency, status, created_at)"
    " VALUES (gen_random_uuid(), gen_random_uuid(), 1, 'EUR', 'SUCCEEDED', now())",
    "notifications": "INSERT INTO notifications"
    " (id, order_id, type, recipient, message, created_at) VALUES"
    " (gen_random_uuid(), gen_random_uuid(), 'ORDER_CONFIRMED', 'c', 'm', now())",
}


@asynccontextmanager
async def _writer_in_flight(engine: AsyncEngine, table: str) -> AsyncIterator[None]:
    """A transaction that inserted into ``table`` and stays open: a build waits for it."""
    async with engine.connect() as conn:
        await conn.execute(text(INSERTS[table]))
        yield
        await conn.commit()


async def _index_is_valid(engine: AsyncEngine, index: str) -> bool | None:
    """``pg_index.indisvalid`` of ``index`` (``None``: there is none)."""
    query = text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")
    async with engine.connect() as conn:
        valid: bool | None = await conn.scalar(query, {"name": index})
        return valid


async def _build_lock_modes(engine: AsyncEngine, table: str) -> set[str]:
    """The locks on ``table`` that the backend running ``CREATE INDEX`` holds or waits for."""
    query = text(
        "SELECT l.mode FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'relation' AND l.relation = to_regclass(:table)"
        " AND a.query ILIKE 'CREATE INDEX%'"
    )
    async with engine.connect() as conn:
        return set((await conn.scalars(query, {"table": table})).all())


async def _settle(task: asyncio.Task[None]) -> None:
    """A migration a failed test left behind: given time to end, then cancelled."""
    with suppress(Exception, asyncio.CancelledError):
        await asyncio.wait_for(task, 30)


@pytest.mark.parametrize("step", INDEX_REVISIONS)
async def test_an_index_on_an_existing_table_builds_without_blocking_writers(
    new_database: DatabaseFactory, step: IndexRevision
) -> None:
    """While the build waits for a writer's open transaction, another writer's INSERT goes
    through at once: the build holds SHARE UPDATE EXCLUSIVE on the table, where a plain
    build's SHARE lock queues every later INSERT behind it."""
    url = await new_database.create()
    await migrate(url, step.service, step.before)
    engine = create_engine(url)
    build = None
    try:
        async with _writer_in_flight(engine, step.table):
            build = asyncio.create_task(migrate(url, step.service, step.revision))
            await wait_for_lock_waiters(engine, 1)  # the build waits for the writer
            async with engine.begin() as other:
                await other.execute(text("SET LOCAL lock_timeout = '5s'"))
                await other.execute(text(INSERTS[step.table]))
            assert await _build_lock_modes(engine, step.table) == {"ShareUpdateExclusiveLock"}
        await asyncio.wait_for(build, 30)
        assert await current_revisions(url, step.service) == {step.revision}
        assert await _index_is_valid(engine, step.index) is True
    finally:
        if build is not None:
            await _settle(build)
        await engine.dispose()


@pytest.mark.parametrize("step", INDEX_REVISIONS)
async def test_a_rerun_replaces_the_invalid_index_of_an_interrupted_build(
    new_database: DatabaseFactory, step: IndexRevision
) -> None:
    """A concurrent build interrupted while it waited for a writer leaves its index INVALID;
    running the revision again builds a valid one and stamps the revision."""
    url = await new_database.create()
    await migrate(url, step.service, step.before)
    engine = create_engine(url)
    build = f"CREATE INDEX CONCURRENTLY {step.index} ON {step.table} ({step.columns})"
    try:
        async with _writer_in_flight(engine, step.table), engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SET lock_timeout = '200ms'"))
            with pytest.raises(DBAPIError, match="lock timeout"):
                await conn.execute(text(build))
        assert await _index_is_valid(engine, step.index) is False

        await migrate(url, step.service, step.revision)
        assert await current_revisions(url, step.service) == {step.revision}
        assert await _index_is_valid(engine, step.index) is True
    finally:
        await engine.dispose()


async def _wait_for_lock_tries(engine: AsyncEngine, within: float = 10.0) -> None:
    """Until another backend of this database has asked for an advisory lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND query LIKE '%advisory%lock%'"
    )
    async with asyncio.timeout(within), engine.connect() as conn:
        while not await conn.scalar(query):
            await conn.rollback()  # a new transaction sees fresh statistics


async def test_a_replica_waiting_for_the_migration_lock_does_not_stall_the_build(
    new_database: DatabaseFactory,
) -> None:
    """A concurrent build waits for every snapshot of the database older than its own: the
    second replica must not wait for the lock in a statement (with a snapshot) while the
    first one builds, or the build waits for it as it waits for the build (deadlock)."""
    url = await new_database.create()
    await migrate(url, "order", "order_0001")
    engine = create_engine(url)
    replicas: list[asyncio.Task[None]] = []
    try:
        async with _writer_in_flight(engine, "processed_events"):
            replicas.append(asyncio.create_task(migrate(url, "order")))
            await wait_for_lock_waiters(engine, 1)  # the first builds: waits for the writer
            replicas.append(asyncio.create_task(migrate(url, "order")))
            await _wait_for_lock_tries(engine)
        await asyncio.wait_for(asyncio.gather(*replicas), 30)
        assert await is_at_head(url, "order")
        assert await _index_is_valid(engine, INBOX_INDEX) is True
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    finally:
        for replica in replicas:
            await _settle(replica)
        await engine.dispose()


async def test_a_migration_cancelled_during_a_build_is_cancelled_and_completes_on_rerun(
    new_database: DatabaseFactory,
) -> None:
    """Cancelled while it builds (``commerce up`` stopped, a timeout), ``migrate`` raises the
    cancellation, not the error of alembic's clean-up on the connection it invalidated; the
    revision stays unstamped and the next run completes it."""
    url = await new_database.create()
    await migrate(url, "payment", "payment_0002")
    engine = create_engine(url)
    try:
        async with _writer_in_flight(engine, "payments"):
            build = asyncio.create_task(migrate(url, "payment"))
            await wait_for_lock_waiters(engine, 1)  # the build waits for the writer
            build.cancel()
            with pytest.raises(asyncio.CancelledError):
                await build
        assert await current_revisions(url, "payment") == {"payment_0002"}

        await migrate(url, "payment")
        assert await is_at_head(url, "payment")
        assert await _index_is_valid(engine, "payments_created_at_idx") is True
    finally:
        await engine.dispose()


CHURNING = {
    "order": ("order_0002", ("processed_events", "outbox", "idempotency_keys")),
    "inventory": ("inventory_0004", ("processed_events", "outbox")),
    "payment": ("payment_0003", ("processed_events", "outbox")),
    "notification": ("notification_0003", ("processed_events", "outbox")),
}


@pytest.mark.parametrize("service", list(CHURNING))
async def test_the_churning_tables_are_vacuumed_after_one_percent_of_changes(
    new_database: DatabaseFactory, service: str
) -> None:
    """PostgreSQL's default waits for 20 % of a table to be dead rows: tens of millions of
    purged inbox ids. Down one revision resets the tables to the server's defaults."""
    url = await new_database.create(service)
    before, tables = CHURNING[service]
    query = text(
        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(:tables) AND relkind = 'r'"
    )
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            options = dict((await conn.execute(query, {"tables": list(tables)})).all())
        assert set(options) == set(tables)
        for table in tables:
            assert "autovacuum_vacuum_scale_factor=0.01" in options[table], table
        await downgrade(url, service, before)
        async with engine.connect() as conn:
            options = dict((await conn.execute(query, {"tables": list(tables)})).all())
        assert set(options) == set(tables)
        assert all(not each for each in options.values()), options
    finally:
        await engine.dispose()

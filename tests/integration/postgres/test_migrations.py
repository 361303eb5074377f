"""Migrations: upgrade, downgrade and upgrade again; the result matches tables.py exactly."""

from __future__ import annotations

import asyncio

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

from tests.fixtures.postgres import DatabaseFactory

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


BEFORE_INBOX_INDEX = {
    "order": "order_0001",
    "inventory": "inventory_0002",
    "payment": "payment_0001",
    "notification": "notification_0001",
}


@pytest.mark.parametrize("service", SERVICES)
async def test_the_inbox_index_revision_goes_down_and_up_again(
    new_database: DatabaseFactory, service: str
) -> None:
    """Down to the revision before it drops the inbox's ``processed_at`` index and keeps
    every table; up again brings it back."""
    url = await new_database.create(service)
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert "processed_events_processed_at_idx" in await conn.run_sync(_inbox_indexes)

        await downgrade(url, service, BEFORE_INBOX_INDEX[service])
        assert await current_revisions(url, service) == {BEFORE_INBOX_INDEX[service]}
        async with engine.connect() as conn:
            assert "processed_events_processed_at_idx" not in await conn.run_sync(_inbox_indexes)
            assert await conn.run_sync(_tables) == set(METADATA[service].tables)

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

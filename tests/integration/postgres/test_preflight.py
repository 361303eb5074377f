"""``commerce run``'s preflight: one line when the database is unreachable or not migrated."""

from __future__ import annotations

import pytest
from commerce_apps.platform import PlatformError
from commerce_apps.service import preflight
from commerce_apps.settings import Settings

from tests.fixtures.postgres import DatabaseFactory

pytestmark = pytest.mark.integration


async def test_a_migrated_database_passes(new_database: DatabaseFactory) -> None:
    await preflight("order", Settings(database_url=await new_database.create("order")))


async def test_an_empty_database_is_not_migrated(new_database: DatabaseFactory) -> None:
    settings = Settings(database_url=await new_database.create())
    not_migrated = r"^order database is not migrated: run 'commerce migrate order'"
    with pytest.raises(PlatformError, match=not_migrated):
        await preflight("order", settings)


async def test_an_unreachable_server_is_one_line() -> None:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:9/nowhere")
    with pytest.raises(PlatformError, match=r"^order database unreachable: ") as failure:
        await preflight("order", settings, seconds=5)
    assert "\n" not in str(failure.value)

"""libpq's ``sslmode`` in a database URL, as managed servers hand them out, works for both
the SQLAlchemy engines and the tools that connect with asyncpg directly."""

from __future__ import annotations

import asyncpg
import pytest
from adapters_postgres.engine import async_url, create_engine, plain_url
from sqlalchemy import text
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.integration


def with_option(url: str, option: str, value: str) -> str:
    parsed = make_url(url)
    return parsed.set(query={**parsed.query, option: value}).render_as_string(hide_password=False)


def test_sslmode_is_asyncpg_ssl_for_sqlalchemy_and_stays_sslmode_for_libpq_tools() -> None:
    given = "postgresql://u:p@db.example.com:5432/orders?sslmode=require"
    assert make_url(async_url(given)).query == {"ssl": "require"}
    assert make_url(plain_url(given)).query == {"sslmode": "require"}
    asyncpg_form = "postgresql+asyncpg://u:p@db.example.com/orders?ssl=verify-full"
    assert make_url(plain_url(asyncpg_form)).query == {"sslmode": "verify-full"}


@pytest.mark.parametrize("option", ["sslmode", "ssl"])
async def test_a_url_with_an_ssl_option_connects(postgres_admin_url: str, option: str) -> None:
    """Before, ``?sslmode=…`` failed every connection: "connect() got an unexpected keyword
    argument 'sslmode'", reported as "database server unreachable"."""
    url = with_option(postgres_admin_url, option, "disable")  # the local server has no TLS
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(plain_url(url), timeout=5)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()

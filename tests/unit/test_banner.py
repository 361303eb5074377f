"""``commerce up``'s banner: database URLs fit to print, and to paste when they hold no secret."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
from commerce_apps.cli import _banner
from commerce_apps.platform import Platform

pytestmark = pytest.mark.unit

# pgserver's form: an empty password, and a socket directory longer than a narrow terminal
EMBEDDED = "postgresql://postgres:@/commerce_order?host=/home/someone/projects/shop/.commerce/pg"


def banner(
    database_urls: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    server_url: str = "",
    bootstrap_servers: str = "127.0.0.1:9092",
) -> str:
    platform = SimpleNamespace(
        urls={},
        pids={},
        bootstrap_servers=bootstrap_servers,
        database_urls=database_urls,
        server_url=server_url,
    )
    _banner(cast(Platform, platform))
    return capsys.readouterr().out


def test_a_server_password_is_masked(capsys: pytest.CaptureFixture[str]) -> None:
    out = banner({"order": "postgresql://app:s3cret@db.example:5432/commerce_order"}, capsys)
    assert "PostgreSQL order: postgresql://app:***@db.example:5432/commerce_order" in out
    assert "s3cret" not in out


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (  # libpq's other place for it, which asyncpg takes too: it was shown in full
            "postgresql://app@db.example:5432/commerce_order?password=s3cret",
            "postgresql://app@db.example:5432/commerce_order?password=***",
        ),
        (
            "postgresql://app:s3cret@db/commerce_order?sslmode=require&sslpassword=s3cret",
            "postgresql://app:***@db/commerce_order?sslmode=require&sslpassword=***",
        ),
    ],
)
def test_a_password_in_the_query_is_masked(
    url: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = banner({"order": url}, capsys, server_url=url)
    assert f"PostgreSQL order: {shown}\n" in out
    assert "s3cret" not in out


@pytest.mark.parametrize(
    "url", [EMBEDDED, "postgresql://postgres@127.0.0.1:5432/commerce_order"], ids=["empty", "none"]
)
def test_a_url_without_a_password_is_shown_as_it_is(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = banner({"order": url}, capsys)
    assert f"PostgreSQL order: {url}\n" in out
    assert "***" not in out


def test_the_server_url_for_the_admin_commands_is_given_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``commerce migrate`` and ``outbox resend`` for all four need the server, not a database."""
    out = banner({}, capsys, server_url="postgresql://app:s3cret@db.example:5432/postgres")
    assert "export COMMERCE_DATABASE_URL='postgresql://app:***@db.example:5432/postgres'" in out


@pytest.mark.parametrize(
    ("servers", "told"), [("127.0.0.1:9092", False), ("127.0.0.1:15769", True)]
)
def test_a_broker_off_kafkas_port_comes_with_the_export_the_cli_needs(
    servers: str, told: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """On 9092 the CLI's default finds it; elsewhere (9092 was taken) the banner says how."""
    out = banner({}, capsys, bootstrap_servers=servers)
    assert (f"export KAFKA_BOOTSTRAP_SERVERS={servers}" in out) is told

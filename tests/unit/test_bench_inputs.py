"""``commerce bench`` input checks: bad input is one line (or a usage error) before the run, and
a failure after it loses nothing. No platform, PostgreSQL or broker is started: every address
is a closed port (127.0.0.1:1), which fails at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from adapters_kafka.embedded import free_port
from commerce_apps import bench
from commerce_apps.bench import relay
from commerce_apps.bench.load import LoadConfig, check_reachable
from commerce_apps.bench.relay import RelayBenchConfig, run_relay_bench
from commerce_apps.bench.report import Completion, LoadResult
from commerce_apps.platform import PlatformError

from tests.fixtures.cli import assert_one_line_error, commerce

pytestmark = pytest.mark.unit

CLOSED = "http://127.0.0.1:1"  # nothing listens: a run that gets past the checks fails fast
DATABASE = "postgresql://u:secret@127.0.0.1:1/x"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:1",  # aiohttp's NonHttpUrlClientError: once a traceback
        "127.0.0.1:1",  # once "error: URL should be absolute"
        "http://127.0.0.1:1/api",  # once "error: base_url must have a trailing '/'"
        "http://127.0.0.1:1/?x=1",
        "http://127.0.0.1:abc",
        "http://",
    ],
)
def test_an_order_url_that_is_no_http_base_url_is_one_line_naming_the_option(url: str) -> None:
    result = commerce("bench", "--order-url", url, "--quiet")
    assert_one_line_error(result, "error: --order-url ")


async def test_no_order_service_says_why_in_words_not_a_repr() -> None:
    """It printed ``ClientConnectorError(ConnectionKey(host=..., proxy_headers_hash=None,...``."""
    port = free_port()
    said = rf"^no order service answers at http://127\.0\.0\.1:{port}: Cannot connect to host "
    with pytest.raises(OSError, match=said) as failed:
        await check_reachable(f"http://127.0.0.1:{port}")
    assert "ConnectionKey(" not in str(failed.value)


async def test_check_reachable_makes_any_client_error_one_line() -> None:
    with pytest.raises(OSError, match=r"^no order service answers at ftp://127\.0\.0\.1:1: "):
        await check_reachable("ftp://127.0.0.1:1")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--timeout", "0"),
        ("--timeout", "-1"),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--poll-interval", "-0.1"),
        ("--poll-interval", "nan"),
        ("--poll-interval", "inf"),
        ("--log-level", "LOUD"),  # failed once the embedded platform configured its logging
    ],
)
def test_a_timeout_or_poll_interval_out_of_bounds_is_a_usage_error(option: str, value: str) -> None:
    result = commerce("bench", "--order-url", CLOSED, "--quiet", option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_rate_that_is_not_finite_is_one_line(value: str) -> None:
    """NaN posted every order at once; infinity did too, and made the --json line no JSON."""
    result = commerce("bench", "--order-url", CLOSED, "--quiet", "--rate", value)
    assert_one_line_error(result, "error: --rate must be positive")


def test_a_plot_under_a_file_is_refused_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    plot = tmp_path / "file" / "sub" / "latency.png"
    result = commerce("bench", "--order-url", CLOSED, "--quiet", "--plot", str(plot))
    assert_one_line_error(result, f"error: --plot {plot}: ")


def test_a_plot_that_is_a_directory_is_refused_before_the_run(tmp_path: Path) -> None:
    result = commerce("bench", "--order-url", CLOSED, "--quiet", "--plot", str(tmp_path))
    assert_one_line_error(result, f"error: --plot {tmp_path}: is a directory")


def test_a_plot_that_cannot_be_written_after_the_run_keeps_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plot's directory becomes a file during the run: the numbers are printed all the
    same (the --json line last on stdout), then the error, and the exit status says so."""
    folder = tmp_path / "plots"
    folder.mkdir()

    async def reachable(order_url: str) -> None:
        pass

    async def drive(config: LoadConfig, quiet: bool) -> LoadResult:
        folder.rmdir()
        folder.write_text("")
        return LoadResult(orders=2, completions=[Completion(0.0, 0.05, "CONFIRMED")])

    monkeypatch.setattr(bench, "check_reachable", reachable)
    monkeypatch.setattr(bench, "_drive", drive)
    plot = folder / "latency.png"
    result = commerce("bench", "--orders", "2", "--json", "--quiet", "--plot", str(plot))
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"error: --plot {plot}: not written: "), result.output
    summary = json.loads(lines[-2])  # the --json line, just before the error
    assert (summary["orders"], summary["terminal"]) == (2, 1)


async def test_the_relay_bench_reaches_the_broker_before_it_creates_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def create_databases(admin_url: str, names: list[str]) -> list[str]:
        raise AssertionError("a scratch database was created before the broker answered")

    monkeypatch.setattr(relay, "create_databases", create_databases)
    config = RelayBenchConfig(events=1, database_url=DATABASE, kafka="127.0.0.1:1")
    with pytest.raises(PlatformError, match=r"^broker unreachable at 127\.0\.0\.1:1: "):
        await run_relay_bench(config)


@pytest.mark.parametrize("wrong_password", [False, True])
async def test_the_relay_bench_names_a_database_server_it_cannot_reach(
    wrong_password: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A closed port, or a server refusing the role (asyncpg's error, not an ``OSError``:
    once a traceback), is one line naming the server, its password masked."""

    async def topics_made(*args: Any, **kwargs: Any) -> list[str]:
        return []  # the broker answers

    async def refused(*args: Any, **kwargs: Any) -> None:
        raise asyncpg.InvalidAuthorizationSpecificationError(
            'password authentication failed for user "u"'
        )

    monkeypatch.setattr(relay, "ensure_topics", topics_made)
    if wrong_password:
        monkeypatch.setattr(asyncpg, "connect", refused)
    config = RelayBenchConfig(events=1, database_url=DATABASE, kafka="127.0.0.1:1")
    with pytest.raises(PlatformError) as failed:
        await run_relay_bench(config)
    message = str(failed.value)
    assert message.startswith("database server postgresql://u:***@127.0.0.1:1/x unreachable: ")
    assert "secret" not in message
    if wrong_password:
        assert "password authentication failed" in message

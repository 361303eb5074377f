"""How a CLI command ends: a result, one line and exit 1, or a clean stop on a signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import typer
from adapters_kafka.embedded import free_port
from commerce_apps.console import database_targets, fail, run_async
from commerce_apps.platform import PlatformError, PortInUse, check_port_free, on_broker
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.unit


def test_a_result_is_returned() -> None:
    async def main() -> int:
        return 7

    assert run_async(main) == 7


def test_a_cancellation_no_signal_asked_for_is_an_error_not_a_clean_stop(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """aiokafka's consumer stopped right after its start leaks a CancelledError: that once
    ended ``commerce bench --kafka`` with nothing printed and exit 0."""

    async def main() -> None:
        raise asyncio.CancelledError

    with pytest.raises(typer.Exit) as ended:
        run_async(main)
    assert ended.value.exit_code == 1
    assert "cancelled from inside" in capsys.readouterr().err


def test_sigterm_is_a_clean_stop() -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)

    with pytest.raises(typer.Exit) as ended:
        run_async(main)
    assert ended.value.exit_code == 0


def test_a_message_with_colons_is_printed_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    """Rich read ":abc:" in "127.0.0.1:abc: invalid literal" as an emoji code."""
    with pytest.raises(typer.Exit):
        raise fail("broker unreachable at 127.0.0.1:abc: invalid literal for int()")
    assert "127.0.0.1:abc: invalid literal" in capsys.readouterr().err


async def test_a_broker_that_does_not_answer_says_for_how_long() -> None:
    """``TimeoutError()`` says nothing: the line ended in "at localhost:9092: "."""
    with pytest.raises(PlatformError, match=r"^broker unreachable at b:9092: no answer in 0.05 s$"):
        await on_broker("b:9092", asyncio.sleep(1), seconds=0.05)


def test_a_port_check_binds_an_ipv6_host_as_uvicorn_would() -> None:
    """``--host ::1`` was refused: the check tried IPv4 only."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    check_port_free("::1", free_port())
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as held:
        held.bind(("::1", 0))
        held.listen()
        with pytest.raises(PortInUse):
            check_port_free("::1", held.getsockname()[1])


def test_a_service_named_with_only_a_server_url_gets_its_database_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``commerce migrate order --database-url X`` said "DATABASE_URL is not set"."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of a developer's here
    server = "postgresql://u:p@db:5432/postgres"
    [(name, url)] = database_targets("order", server).items()
    assert (name, make_url(url).database, make_url(url).host) == ("order", "order", "db")


def test_database_url_wins_over_a_server_url_for_one_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@own:5432/orders_db")
    [url] = database_targets("order", "postgresql://u:p@db:5432/postgres").values()
    assert make_url(url).database == "orders_db"


async def test_the_broker_clients_own_error_lines_do_not_repeat_the_one_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``commerce up --kafka <unreachable>`` printed aiokafka's ERROR before its own line."""
    kafka_log = logging.getLogger("aiokafka")

    async def refused() -> None:
        kafka_log.error("Unable connect to node with id 0")
        raise OSError("Connection refused")

    monkeypatch.setattr(kafka_log, "propagate", True)  # other tests' logging setups aside
    caplog.set_level(logging.INFO, logger="aiokafka")
    with pytest.raises(PlatformError, match=r"^broker unreachable at b:9092: Connection refused$"):
        await on_broker("b:9092", refused())
    assert [r.message for r in caplog.records if r.name == "aiokafka"] == []
    kafka_log.error("after the call")  # its level is given back
    assert [r.message for r in caplog.records if r.name == "aiokafka"] == ["after the call"]


def test_a_port_check_binds_every_address_the_host_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name for ::1 and then 127.0.0.1 (``localhost`` on many machines): uvicorn binds
    both, and a port an IPv4 listener held passed when only the first address was tried."""
    stream = socket.SOCK_STREAM

    def dual_stack(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        assert host == "dual.test"
        return [
            (socket.AF_INET6, stream, 6, "", ("::1", port, 0, 0)),
            (socket.AF_INET, stream, 6, "", ("127.0.0.1", port)),
        ]

    try:
        with socket.socket(socket.AF_INET6, stream) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    monkeypatch.setattr(socket, "getaddrinfo", dual_stack)
    with socket.socket(socket.AF_INET, stream) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(PortInUse):
            check_port_free("dual.test", held.getsockname()[1])

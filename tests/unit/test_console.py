"""How a CLI command ends: a result, one line and exit 1, or a clean stop on a signal."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import typer
from commerce_apps.console import run_async

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

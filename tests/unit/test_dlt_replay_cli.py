"""``commerce dlt replay`` stopped halfway says how many records went back, and exits non-zero."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from adapters_kafka.dead_letters import DeadLetter
from commerce_apps import dlt
from commerce_apps.cli import app
from core_saga.ports import PublishError
from typer.testing import CliRunner

from tests.integration.kafka.test_replay_interrupted import letter

pytestmark = pytest.mark.unit


class Publisher:
    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def replaying(monkeypatch: pytest.MonkeyPatch, then: Callable[[], Any]) -> None:
    """Four letters on the DLT; the replay sends two, then ``then()`` is awaited."""

    async def dead_letters(kafka: object, topic: str) -> list[DeadLetter]:
        return [letter(offset) for offset in range(4)]

    async def started(publisher: object) -> Publisher:
        return Publisher()

    async def replay(
        letters: list[DeadLetter], publisher: object, *, on_sent: Callable[..., None], **_: Any
    ) -> int:
        for each in letters[:2]:
            on_sent(each)
        await then()
        return 2

    monkeypatch.setattr(dlt, "_dead_letters", dead_letters)
    monkeypatch.setattr(dlt, "_started", started)
    monkeypatch.setattr(dlt, "replay", replay)


def test_a_broker_failing_halfway_is_one_line_with_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_ack() -> None:
        raise TimeoutError

    replaying(monkeypatch, no_ack)
    result = CliRunner().invoke(app, ["dlt", "replay", "order-events"])

    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: replayed at least 2 of 4 record(s), then the broker at ")
    assert line.endswith("failed: no acknowledgement in 30 s; replaying again is safe")


def test_ctrl_c_halfway_says_how_far_it_got_and_is_no_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: no output and exit 0, as if every letter had gone back."""

    async def interrupted() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(5)

    replaying(monkeypatch, interrupted)
    result = CliRunner().invoke(app, ["dlt", "replay", "order-events"])

    assert result.exit_code == 130
    assert "interrupted: replayed at least 2 of 4 record(s)" in result.output


def test_a_refused_send_is_one_line_with_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """``KafkaPublisher`` reports a broker's refusal as ``PublishError``: it was a traceback."""

    async def refused() -> None:
        raise PublishError("order-events[0]: NotLeaderForPartitionError")

    replaying(monkeypatch, refused)
    result = CliRunner().invoke(app, ["dlt", "replay", "order-events"])

    assert result.exit_code == 1, result.exception
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: replayed at least 2 of 4 record(s), then the broker at ")
    assert "failed: order-events[0]: NotLeaderForPartitionError; replaying again is safe" in line

"""The consumer's supervisor: backoff while it fails fast, reset after a healthy run."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaConnectionError
from commerce_apps.jobs import supervise
from core_saga.relay import RelayBackoff


async def test_backoff_doubles_to_its_cap_and_starts_over_after_a_healthy_run() -> None:
    cap = 0.5
    # fail fast four times, then fail after running longer than the cap, fail fast, then stop
    plan = ["fail", "fail", "fail", "fail", "long", "fail", "return"]
    delays: list[float] = []

    async def run() -> None:
        step = plan.pop(0)
        if step == "long":
            await asyncio.sleep(cap + 0.1)
        if step != "return":
            raise ConnectionError(step)

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    await supervise(run, "consumer", RelayBackoff(initial=0.1, maximum=cap), sleep=sleep)

    assert delays == [0.1, 0.2, 0.4, 0.5, 0.1, 0.2]
    assert plan == []


@pytest.mark.parametrize(
    ("cause", "advice", "level"),
    [(ConnectionError("refused"), None, "WARNING"), (PermissionError("no"), "check it", "ERROR")],
)
async def test_a_run_of_failures_is_one_line_an_error_with_advice_when_it_will_not_pass(
    caplog: pytest.LogCaptureFixture, cause: Exception, advice: str | None, level: str
) -> None:
    """Before: a WARNING per restart, and a refused setting an ERROR and a WARNING each time."""
    caplog.set_level(logging.INFO, logger="commerce_apps.jobs")
    plan = [cause] * 5

    async def run() -> None:
        if plan:
            raise plan.pop()

    async def sleep(seconds: float) -> None:
        pass

    await supervise(run, "broker connection", sleep=sleep, advice=lambda exc: advice)
    logged = [r for r in caplog.records if r.name == "commerce_apps.jobs"]
    assert [r.levelname for r in logged] == [level]
    assert str(advice or cause) in logged[0].getMessage()


async def test_an_error_that_names_its_class_is_not_named_twice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiokafka's errors say their class: the line read ``KafkaConnectionError:
    KafkaConnectionError: Unable to bootstrap ...``."""
    caplog.set_level(logging.INFO, logger="commerce_apps.jobs")
    plan = [KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")]

    async def run() -> None:
        if plan:
            raise plan.pop()

    async def sleep(seconds: float) -> None:
        pass

    await supervise(run, "broker connection", sleep=sleep)
    [logged] = [r.getMessage() for r in caplog.records if r.name == "commerce_apps.jobs"]
    assert logged.startswith("broker connection failed (KafkaConnectionError: Unable to boot")

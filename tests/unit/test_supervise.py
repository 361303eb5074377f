"""The consumer's supervisor: backoff while it fails fast, reset after a healthy run."""

from __future__ import annotations

import asyncio

from commerce_apps.app import _supervise
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

    await _supervise(run, "consumer", RelayBackoff(initial=0.1, maximum=cap), sleep=sleep)

    assert delays == [0.1, 0.2, 0.4, 0.5, 0.1, 0.2]
    assert plan == []

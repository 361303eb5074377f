"""``commerce bench`` against the ``succeeding`` platform: the JSON summary and the plot.

Small runs that exercise the real code paths; no assertion is ever made on a timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from commerce_apps.bench.load import LoadConfig, LoadRun

from tests import ROOT
from tests.e2e.platform import RunningPlatform

CLI = "from commerce_apps.cli import main; main()"
pytestmark = pytest.mark.e2e
DISTRIBUTION = {"p50", "p95", "p99", "max"}


async def settle(platform: RunningPlatform) -> None:
    """Until no product holds a reservation: later tests start from a quiet platform."""
    async with asyncio.timeout(40):
        while any(p["reserved"] for p in (await platform.products()).values()):
            await asyncio.sleep(0.05)


async def bench(platform: RunningPlatform, *args: str) -> dict[str, Any]:
    """``commerce bench`` on ``platform`` with ``args`` (in its Kafka namespace, as an operator
    sets it); its JSON summary, once it settled."""
    namespace = platform.platform.config.settings.kafka_namespace
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, "bench", "--order-url", platform.url("order", ""),
        *args, "--json", "--quiet",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "KAFKA_NAMESPACE": namespace},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    await settle(platform)
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def test_the_load_bench_reports_every_order(
    succeeding: RunningPlatform, tmp_path: Path
) -> None:
    plot = tmp_path / "latency.png"
    summary = await bench(
        succeeding,
        "--orders",
        "20",
        "--concurrency",
        "4",
        "--plot",
        str(plot),
        "--poll",
        "--seed",
        "1",
    )

    assert {"orders", "throughput_per_s", "latency_ms", "post_latency_ms", "errors"} <= set(summary)
    assert set(summary["latency_ms"]) == DISTRIBUTION == set(summary["post_latency_ms"])
    assert summary["orders"] == 20 and summary["errors"] == 0
    assert summary["watch"] == "poll" and summary["poll_requests"] >= 20
    assert summary["terminal"] == 20
    assert sum(summary["statuses"].values()) == 20
    by_status = summary["latency_ms_by_status"]
    assert set(by_status) == set(summary["statuses"])
    assert all(set(latency) == DISTRIBUTION for latency in by_status.values())
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


async def test_the_bench_sees_each_end_on_order_events(succeeding: RunningPlatform) -> None:
    kafka = succeeding.platform.bootstrap_servers
    # Seeded lines: random ones can exhaust a product's seeded stock and cancel an order.
    summary = await bench(
        succeeding, "--orders", "12", "--concurrency", "3", "--kafka", kafka, "--seed", "2"
    )

    assert summary["watch"] == "events" and summary["poll_requests"] == 0
    # every order ended on the topic, and its status over HTTP agreed (else an error)
    assert (summary["terminal"], summary["errors"]) == (12, 0)
    assert summary["statuses"] == {"CONFIRMED": 12}  # the ``succeeding`` platform
    # the order service's own commit times, on this machine's clock: before each end was seen
    assert summary["clock_check"].startswith("agrees")
    committed = summary["committed_latency_ms_by_status"]["CONFIRMED"]
    assert 0 < committed["p50"] <= summary["latency_ms_by_status"]["CONFIRMED"]["p50"]
    assert committed["max"] <= summary["latency_ms_by_status"]["CONFIRMED"]["max"]


async def test_the_open_loop_places_every_order(succeeding: RunningPlatform) -> None:
    config = LoadConfig(succeeding.url("order", ""), orders=8, rate=40.0, seed=7)
    result = await LoadRun(config).run()
    await settle(succeeding)

    summary = result.summary()
    assert (summary["orders"], summary["errors"], summary["terminal"]) == (8, 0, 8)
    assert len(result.post_seconds) == 8
    assert set(summary["statuses"]) <= {"CONFIRMED", "CANCELLED"}

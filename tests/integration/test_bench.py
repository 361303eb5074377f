"""``commerce bench relay`` on the session's PostgreSQL and broker: every row is published.

Small runs that exercise the real code paths; no assertion is ever made on a timing.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from commerce_apps.bench.relay import RelayBenchConfig, run_relay_bench

from tests import ROOT

CLI = "from commerce_apps.cli import main; main()"
pytestmark = pytest.mark.integration


async def commerce(*args: str) -> dict[str, object]:
    """Run the ``commerce`` CLI; the JSON object its last stdout line holds."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLI,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 240)
    assert process.returncode == 0, err.decode()
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


async def test_the_relay_bench_publishes_every_row(
    postgres_admin_url: str, kafka_bootstrap: str
) -> None:
    summary = await commerce(
        "bench", "relay", "--events", "200", "--batch-size", "64", "--json",
        "--database-url", postgres_admin_url, "--kafka", kafka_bootstrap,
    )  # fmt: skip
    assert summary["events"] == 200
    assert summary["published"] == 200
    assert summary["unpublished"] == 0
    assert summary["profile"] == "default"
    assert isinstance(summary["events_per_s"], float)


async def test_the_seed_profile_sends_one_by_one_in_polls_of_100(
    postgres_admin_url: str, kafka_bootstrap: str
) -> None:
    summary = await run_relay_bench(
        RelayBenchConfig(
            events=150, profile="seed", database_url=postgres_admin_url, kafka=kafka_bootstrap
        )
    )
    assert summary["events"] == 150
    assert (summary["published"], summary["unpublished"]) == (150, 0)
    assert summary["batch_size"] == 100

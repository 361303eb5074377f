"""The order service's commit times in a bench summary: used only when its clock agrees."""

from __future__ import annotations

import pytest
from commerce_apps.bench.load import CLOCK_SLACK, LoadConfig, LoadRun
from commerce_apps.bench.report import Completion

pytestmark = pytest.mark.unit


def ran(created: float) -> LoadRun:
    """A run of two orders, each sent at 1.0 s and answered at 1.01 s."""
    run = LoadRun(LoadConfig("http://127.0.0.1:1", orders=2))
    for index, status in enumerate(("CONFIRMED", "CANCELLED")):
        run.result.completions.append(Completion(1.0, 1.08, status, answered_at=1.01))
        run._ended[f"o{index}"] = index
    run._keep_commit_times({"o0": (created, 1.05), "o1": (created, 1.06)})
    return run


def test_a_clock_that_agrees_gives_each_order_its_commit_time() -> None:
    summary = ran(created=1.005).result.summary()
    assert summary["clock_check"].startswith("agrees")
    assert summary["committed_latency_ms_by_status"]["CONFIRMED"]["p50"] == 50.0
    assert summary["committed_latency_ms_by_status"]["CANCELLED"]["p50"] == 60.0
    assert summary["latency_ms_by_status"]["CONFIRMED"]["p50"] == 80.0  # seen: unchanged


@pytest.mark.parametrize("created", [1.0 - 2 * CLOCK_SLACK, 1.01 + 2 * CLOCK_SLACK])
def test_an_order_created_outside_its_post_means_another_clock(created: float) -> None:
    """Another machine's clock, off by more than the slack: no commit time is made up."""
    summary = ran(created).result.summary()
    assert summary["committed_latency_ms_by_status"] is None
    assert summary["clock_check"].startswith("the order service's clock is off by up to 4.0 ms")

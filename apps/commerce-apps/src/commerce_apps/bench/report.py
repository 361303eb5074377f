"""Benchmark results: percentiles, the one-line JSON summary, and a rich table for people."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def distribution_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations given in seconds, in milliseconds (0.01 ms)."""
    ordered = sorted(seconds)
    summary = {f"p{p}": percentile(ordered, p) for p in PERCENTILES}
    summary["max"] = ordered[-1] if ordered else 0.0
    return {name: round(value * 1000, 2) for name, value in summary.items()}


@dataclass(frozen=True)
class Completion:
    """One order that reached a terminal state; times in seconds since the run started."""

    posted_at: float
    terminal_at: float
    status: str
    answered_at: float | None = None  # the POST's answer
    committed_at: float | None = None  # the order service's updatedAt: its terminal commit

    @property
    def latency(self) -> float:
        """POST sent → terminal state observed."""
        return self.terminal_at - self.posted_at

    @property
    def committed_latency(self) -> float | None:
        """POST sent → the order service made it terminal (its own clock; None: unknown)."""
        return None if self.committed_at is None else self.committed_at - self.posted_at


@dataclass
class LoadResult:
    orders: int
    completions: list[Completion] = field(default_factory=list)
    post_seconds: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    poll_requests: int = 0
    post_retries: int = 0
    client_cpu: float = 0.0  # the load generator's own CPU seconds
    watch: str = "poll"  # how each end was seen: "events" (order-events) or "poll" (HTTP)
    clock_check: str = "not made"  # whether the order service's timestamps could be used

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def summary(self, **extra: Any) -> dict[str, Any]:
        """The ``--json`` object: the contract keys first, then details."""
        done = self.completions
        end = max((c.terminal_at for c in done), default=0.0)
        statuses: dict[str, int] = {}
        for c in done:
            statuses[c.status] = statuses.get(c.status, 0) + 1
        return {
            "orders": self.orders,
            "throughput_per_s": round(len(done) / end, 2) if end > 0 else 0.0,
            "latency_ms": distribution_ms([c.latency for c in done]),
            "post_latency_ms": distribution_ms(self.post_seconds),
            "errors": self.errors,
            "terminal": len(done),
            "statuses": statuses,
            "latency_ms_by_status": {
                status: distribution_ms([c.latency for c in done if c.status == status])
                for status in sorted(statuses)
            },
            "committed_latency_ms_by_status": _committed_by_status(done, statuses),
            "clock_check": self.clock_check,
            "error_kinds": self.error_kinds,
            "duration_s": round(end, 3),
            "poll_requests": self.poll_requests,
            "post_retries": self.post_retries,
            "client_cpu_s": round(self.client_cpu, 2),
            "watch": self.watch,
            **extra,
        }


def _committed_by_status(
    done: Sequence[Completion], statuses: Mapping[str, int]
) -> dict[str, dict[str, float]] | None:
    """POST sent → the order service's terminal commit, by status; None when its clock
    could not be trusted (every order's, or none)."""
    if any(c.committed_latency is None for c in done) or not done:
        return None
    by_status: dict[str, list[float]] = {status: [] for status in sorted(statuses)}
    for c in done:
        if (latency := c.committed_latency) is not None:
            by_status[c.status].append(latency)
    return {status: distribution_ms(values) for status, values in by_status.items()}


def print_table(title: str, summary: Mapping[str, Any], console: Console) -> None:
    """A readable rendering of a summary: scalars, then one row per latency distribution."""
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in summary.items():
        if isinstance(value, Mapping):
            value = "  ".join(f"{k} {v}" for k, v in value.items()) or "-"
        table.add_row(name, str(value))
    console.print(table)

"""The periodic tasks through an outage: a few lines in the log, and a gauge that says unknown."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from adapters_kafka.embedded import free_port
from commerce_apps.app import build_app
from commerce_apps.container import container_for
from commerce_apps.jobs import JOB, JOB_IDLE, IdleJobFilter, every, run_job
from commerce_apps.settings import Settings
from core_saga.ports import InfrastructureError
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from sqlalchemy.exc import DBAPIError

pytestmark = pytest.mark.unit

OUTAGES: list[Exception] = [
    InfrastructureError("order database unreachable: [Errno 111] Connection refused"),
    DBAPIError("SELECT 1", (), asyncpg.exceptions.CannotConnectNowError("starting up")),
    ConnectionRefusedError(111, "Connection refused"),
]


class Stop(BaseException):
    """Ends ``_every``'s loop, as a cancellation does."""


def steps(*outcomes: Exception | None) -> Callable[[], Awaitable[None]]:
    """A step that fails with each outcome in turn (None: succeeds), then stops the loop."""
    plan = list(outcomes)

    async def step() -> None:
        if not plan:
            raise Stop
        outcome = plan.pop(0)
        if outcome is not None:
            raise outcome

    return step


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "commerce_apps.jobs"]


@pytest.mark.parametrize("outage", OUTAGES, ids=lambda e: type(e).__name__)
async def test_an_outage_is_one_warning_line_and_its_end_one_info_line(
    outage: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(Stop):
        await every(0, steps(*[outage] * 20, None, None), "outbox age")

    logged = records(caplog)
    assert [r.levelname for r in logged] == ["WARNING", "INFO"]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in logged)
    assert "outbox age" in logged[0].getMessage()
    assert "recovered" in logged[1].getMessage()


async def test_a_lasting_outage_is_logged_again_every_30_s_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = 0.0

    async def sleep(seconds: float) -> None:
        nonlocal now
        now += seconds

    caplog.set_level(logging.INFO)
    step = steps(*[OUTAGES[1]] * 75, None)  # failing from 0 s to 74 s, up again at 75 s
    with pytest.raises(Stop):
        await every(1.0, step, "deadline sweep", sleep=sleep, clock=lambda: now)

    logged = [(r.levelname, r.getMessage()) for r in records(caplog)]
    assert [level for level, _ in logged] == ["WARNING", "WARNING", "WARNING", "INFO"]
    assert "still failing after 30 s and 31 attempts" in logged[1][1]
    assert "still failing after 60 s and 61 attempts" in logged[2][1]
    assert "recovered after 75 s and 75 failed attempts" in logged[3][1]


async def test_a_bug_is_an_error_with_its_traceback_every_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)  # whatever an earlier test left the root logger at
    with pytest.raises(Stop):
        await every(0, steps(KeyError("status"), KeyError("status")), "sweep")

    logged = records(caplog)
    assert [r.levelname for r in logged] == ["ERROR", "ERROR"]
    assert all(r.exc_info is not None for r in logged)


@pytest.mark.parametrize(
    ("service", "gauge"),
    [
        ("inventory", "outbox_oldest_unpublished_age_seconds"),
        ("payment", "payment_oldest_due_age_seconds"),
        ("notification", "notification_oldest_unsent_age_seconds"),
    ],
)
async def test_an_age_gauge_is_unknown_not_zero_while_the_database_is_down(
    service: str, gauge: str
) -> None:
    dead = free_port()
    settings = Settings(
        database_url=f"postgresql://nobody@127.0.0.1:{dead}/none",
        kafka_bootstrap_servers=f"127.0.0.1:{dead}",
    )
    container = container_for(service, settings)
    app = build_app(container)
    registry = container.metrics().registry

    def age() -> float | None:
        return registry.get_sample_value(gauge)

    assert age() == 0.0
    async with app.router.lifespan_context(app):
        async with asyncio.timeout(5):  # the first sample is taken at start
            while not math.isnan(age() or 0.0):
                await asyncio.sleep(0.05)


class _Recording(SpanProcessor):
    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def test_a_step_that_does_real_work_passes_its_spans_on_before_it_ends() -> None:
    """Held until the root ended, a step's thousands of statements overflowed the batch
    processor's queue (2,048) all at once and most were lost; past ``HOLD_LIMIT`` they go on
    as they end. An idle step's few spans are still held, then dropped."""
    recording = _Recording()
    provider = TracerProvider()
    provider.add_span_processor(IdleJobFilter(recording))
    tracer = provider.get_tracer("test")
    limit = IdleJobFilter.HOLD_LIMIT
    with tracer.start_as_current_span("idle", context=Context(), attributes={JOB: "s"}) as root:
        for n in range(3):
            with tracer.start_as_current_span(f"SELECT {n}"):
                pass
        root.set_attribute(JOB_IDLE, True)
    assert recording.ended == []
    with tracer.start_as_current_span("busy", context=Context(), attributes={JOB: "s"}) as root:
        for n in range(limit + 10):
            with tracer.start_as_current_span(f"UPDATE {n}"):
                pass
        assert len(recording.ended) == limit + 10  # none held back any more
        root.set_attribute(JOB_IDLE, False)
    assert len(recording.ended) == limit + 11


async def test_a_step_cancelled_by_a_shutdown_sends_no_trace() -> None:
    """Cancelled mid-step, the root ended without ``JOB_IDLE`` and was sent: a service
    stopping during an idle sweep exported it as if it had done work."""
    recording = _Recording()
    provider = TracerProvider()
    provider.add_span_processor(IdleJobFilter(recording))
    tracer = provider.get_tracer("test")
    started = asyncio.Event()

    async def idle_step() -> int:
        with tracer.start_as_current_span("SELECT overdue"):
            started.set()
            await asyncio.sleep(10)
        return 0

    step = asyncio.create_task(run_job(tracer, "deadline sweep", idle_step, lambda exc: False))
    await started.wait()
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert recording.ended == []

"""Periodic jobs (the deadline sweep, housekeeping, the outbox and lag gauges): run forever,
log an outage without flooding, and leave a trace only when a step did something.

An outage (``is_infrastructure``) is one WARNING line when it starts, at most one every
``OUTAGE_LOG_SECONDS`` while it lasts and an INFO line when it ends: a stopped database
logged a traceback every second per job before. Anything else is a bug, logged as an ERROR
with its traceback each time. Each step runs in a root span of its own (``run_job``), whose
trace ``IdleJobFilter`` drops when the step did nothing: an idle sweep every second would
otherwise be a trace every second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from adapters_postgres.uow import is_transient
from core_saga.handlers.after_commit import RemoteUnavailable
from core_saga.ports import InfrastructureError
from core_saga.relay import RelayBackoff
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

JOB = "commerce.job"  # on a periodic job's root span: the job's name
JOB_IDLE = "commerce.job.idle"  # set when the step ends: True drops the step's whole trace

OUTAGE_LOG_SECONDS = 30.0  # a periodic task failing for an outage says so at most this often
SUPERVISOR_BACKOFF = RelayBackoff(initial=0.5)  # to RECOVERY_BACKOFF_MAX, as every recovery


def is_infrastructure(exc: BaseException) -> bool:
    """An outage (the database unreachable, restarting, timing out) rather than a bug."""
    return isinstance(exc, InfrastructureError) or is_transient(exc)


def committed_before(exc: BaseException) -> int:
    """What a step that failed had committed first: a sweep whose remote side failed on
    some rows after it recorded others (``RemoteUnavailable.committed``); 0 otherwise."""
    return exc.committed if isinstance(exc, RemoteUnavailable) else 0


def _one_line(exc: BaseException) -> str:
    """``Class: first line``; once, where the message names its class already (aiokafka's
    ``KafkaConnectionError: KafkaConnectionError: Unable to bootstrap ...``)."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()
    if not text:
        return name
    return text[0] if text[0].startswith(f"{name}: ") else f"{name}: {text[0]}"


@dataclass
class _Outage:
    """A periodic task's run of infrastructure failures, and when it last said so."""

    name: str
    every: float
    started: float | None = None
    warned: float = 0.0
    failures: int = 0

    def failed(self, exc: Exception, now: float, advice: str | None = None) -> None:
        """A WARNING, or with ``advice`` (a cause that will not pass by itself) an ERROR."""
        self.failures += 1
        level, why = logging.WARNING, _one_line(exc)
        if advice:
            level, why = logging.ERROR, f"{why}; {advice}"
        if self.started is None:
            self.started = self.warned = now
            log.log(level, "%s failed (%s); retrying", self.name, why)
        elif now - self.warned >= self.every:
            self.warned = now
            log.log(
                level,
                "%s still failing after %.0f s and %d attempts (%s); retrying",
                self.name,
                now - self.started,
                self.failures,
                why,
            )

    def succeeded(self, now: float) -> None:
        if self.started is not None:
            log.info(
                "%s recovered after %.0f s and %d failed attempts",
                self.name,
                now - self.started,
                self.failures,
            )
        self.started, self.failures = None, 0


async def every(
    seconds: float,
    step: Callable[[], Awaitable[Any]],
    name: str,
    tracer: Tracer | None = None,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``step`` forever, ``seconds`` apart; a failing step is logged and tried again.

    An outage is one WARNING line at first, then at most one every ``OUTAGE_LOG_SECONDS``,
    and an INFO line once a step succeeds again; any other failure, a bug, is an ERROR with
    its traceback. Each step is traced only if it did something (``run_job``).
    """
    outage = _Outage(name, OUTAGE_LOG_SECONDS)
    while True:
        try:
            await run_job(tracer, name, step, is_infrastructure)
        except Exception as exc:
            if is_infrastructure(exc):
                outage.failed(exc, clock())
            else:
                log.exception("%s failed; retrying", name)
        else:
            outage.succeeded(clock())
        await sleep(seconds)


async def supervise(
    run: Callable[[], Awaitable[None]],
    name: str,
    backoff: RelayBackoff = SUPERVISOR_BACKOFF,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    advice: Callable[[Exception], str | None] = lambda exc: None,
) -> None:
    """Keep ``run`` going: restart it after a failure (broker down at start), backing off.

    The delay doubles while ``run`` fails fast, up to ``backoff.maximum``; a run that lasted
    longer than that was healthy, so its failure is the first of a new series. Failures are
    logged as a periodic job's outage: once, then at most every ``OUTAGE_LOG_SECONDS``; as an
    ERROR with the text ``advice`` gives for a cause that will not pass by itself.
    """
    loop = asyncio.get_running_loop()
    outage = _Outage(name, OUTAGE_LOG_SECONDS)
    while True:
        started = loop.time()
        try:
            await run()
            return
        except Exception as exc:
            if loop.time() - started > backoff.maximum:  # it ran healthy: a new series
                outage = _Outage(name, OUTAGE_LOG_SECONDS)
            outage.failed(exc, loop.time(), advice(exc))
        await sleep(backoff.delay(outage.failures))


class IdleJobFilter(SpanProcessor):
    """Holds the spans of a periodic job's step (a root span with ``JOB``) until that root
    ends, then passes them all on, or drops them all if the step set ``JOB_IDLE``: a sweep
    that cancelled nothing sends no trace; one that cancelled orders sends its statements.

    An idle step runs a statement or two: one past ``HOLD_LIMIT`` spans is doing work, so its
    spans go on at once from then (held by thousands, they overflowed the batch processor's
    queue when the root ended, and most were lost).
    """

    HOLD_LIMIT = 32

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner = inner
        self._held: dict[int, list[ReadableSpan]] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.parent is None and JOB in (span.attributes or {}):
            with self._lock:
                self._held[span.get_span_context().trace_id] = []
        self.inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if not self._held:  # no job step in flight: requests and consumers take no lock
            self.inner.on_end(span)
            return
        trace_id = span.context.trace_id if span.context is not None else 0
        with self._lock:
            held = self._held.get(trace_id)
            if held is not None and span.parent is not None and len(held) < self.HOLD_LIMIT:
                held.append(span)  # the root ends last: hold its children until then
                return
            if held is not None:
                del self._held[trace_id]  # decided: the root ended, or the step did work
        if held is not None and span.parent is None and (span.attributes or {}).get(JOB_IDLE):
            return
        for ended in [*(held or ()), span]:
            self.inner.on_end(ended)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


async def run_job(
    tracer: Tracer | None,
    name: str,
    step: Callable[[], Awaitable[Any]],
    excused: Callable[[Exception], bool],
) -> Any:
    """One step of a periodic job in a root span of its own, named ``name``.

    Its trace is exported if the step did something (returned a true value: orders
    cancelled, rows purged), failed in a way ``excused`` does not cover (a bug), or failed
    after it committed something (``committed_before``: the events it wrote name its spans as
    their parents); an idle step, or one that met an outage before doing anything (logged
    instead), is dropped (``IdleJobFilter``).
    """
    if tracer is None:
        return await step()
    with tracer.start_as_current_span(name, context=Context(), attributes={JOB: name}) as span:
        try:
            done = await step()
        except asyncio.CancelledError:  # stopped mid-step (a shutdown): nothing to show
            span.set_attribute(JOB_IDLE, True)
            raise
        except Exception as exc:
            span.set_attribute(JOB_IDLE, excused(exc) and not committed_before(exc))
            raise
        span.set_attribute(JOB_IDLE, not done)
        return done

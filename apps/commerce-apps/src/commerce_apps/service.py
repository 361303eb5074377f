"""One service in its own process: ``commerce run``, and the service processes of ``commerce up``.

``serve_one`` serves one service against external PostgreSQL and Kafka (``commerce run``).

In process mode ``Platform`` starts each service with ``ServiceProcess.start``: a Python child
in its own session (so a terminal's Ctrl-C reaches only the parent, which stops the children
before the broker and PostgreSQL), which reads its ``ServiceSpec`` (exact settings, consumer
options) as one JSON line on stdin and runs ``serve_one``. The parent keeps that stdin open:
at EOF the child sends itself SIGTERM and drains, so children also stop when the parent dies,
even by SIGKILL. Stopping is SIGTERM, a bounded wait, then SIGKILL. The parent forwards each
child's output to its own stderr and keeps the last lines for error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import os
import shutil
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import httpx
import uvicorn
from adapters_postgres.migrations import is_migrated
from pydantic import BaseModel, ConfigDict

from commerce_apps.app import SHUTDOWN_SECONDS, build_app
from commerce_apps.container import container_for
from commerce_apps.logs import configure_logging, log_context
from commerce_apps.platform import PlatformError, check_port_free, reach_database
from commerce_apps.settings import ServiceName, Settings

log = logging.getLogger(__name__)

CHILD_COMMAND = "from commerce_apps.service import child_main; child_main()"
TAIL_LINES = 20
STOP_SECONDS = 2 * SHUTDOWN_SECONDS + 5  # above the app's drain: consumer, then publisher
LINE_LIMIT = 1 << 20


async def preflight(service: ServiceName, settings: Settings, seconds: float = 15) -> None:
    """Fail fast, in one line, when the database is unreachable or not migrated.

    An unreachable broker is no reason to refuse: the service starts, takes orders into its
    outbox, reports not-ready, and connects once the broker answers (``build_app``).
    """
    migrated = await reach_database(
        f"{service} database",
        settings.database_url or "",
        seconds,
        check=lambda engine: is_migrated(engine, service),
    )
    if not migrated:
        raise PlatformError(f"{service} database is not migrated: run 'commerce migrate {service}'")


async def serve_one(
    service: ServiceName,
    settings: Settings,
    consumer_options: Mapping[str, Any] | None = None,
    *,
    topics_ready: bool = False,
    service_name: str | None = None,
) -> None:
    """Serve ``service`` until SIGINT/SIGTERM; ``consumer_options`` go to aiokafka's consumer;
    ``service_name`` names its traces (``OTEL_SERVICE_NAME`` of ``commerce run``)."""
    port = settings.port_for(service)
    check_port_free(settings.host, port)
    await preflight(service, settings)
    overrides: dict[str, Any] = {"service_name": service_name or None}
    if consumer_options is not None:
        overrides["consumer_options"] = dict(consumer_options)
    app = build_app(container_for(service, settings, **overrides), ensure_topics=not topics_ready)
    config = uvicorn.Config(app, host=settings.host, port=port, log_config=None, lifespan="on")
    await uvicorn.Server(config).serve()


class ServiceSpec(BaseModel):
    """What a service process needs from its parent: one JSON line on its stdin."""

    model_config = ConfigDict(frozen=True)

    service: ServiceName
    settings: Settings  # complete: the child reads no environment for these
    consumer_options: dict[str, Any] | None = None
    profile: str | None = None  # write cProfile stats of the child to this file at exit
    topics_ready: bool = False  # the parent created the saga topics already


# --- the child -----------------------------------------------------------------------------


def child_main() -> None:
    """A service process started by ``ServiceProcess``: spec on stdin; stops at its EOF."""
    spec = ServiceSpec.model_validate_json(sys.stdin.buffer.readline())
    configure_logging(spec.settings.log_format, spec.settings.log_level)
    exit_zero_on_sigterm()
    threading.Thread(target=_stop_at_eof, name="parent-watch", daemon=True).start()
    with log_context(service=spec.service):
        profiled(spec.profile, lambda: _serve_child(spec))


def _serve_child(spec: ServiceSpec) -> None:
    from commerce_apps.console import run_fast

    try:
        run_fast(
            serve_one(
                spec.service, spec.settings, spec.consumer_options, topics_ready=spec.topics_ready
            )
        )
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def profiled(path: str | None, run: Callable[[], None]) -> None:
    """Run ``run``; with a ``path``, under cProfile, writing its stats there."""
    if path is None:
        run()
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(run)
    finally:
        profiler.dump_stats(path)


def exit_zero_on_sigterm() -> None:
    """A SIGTERM is how a service is asked to stop (a container, a parent): after uvicorn
    drained and re-raised it, or before uvicorn took it over, exit 0 instead of dying of it."""
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop_at_eof() -> None:
    """Stdin closed: the parent stops us or died. Raw reads: no buffer lock held at exit."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


# --- the parent ----------------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """The parent's handle on one service process: start, readiness, output, stop."""

    spec: ServiceSpec
    url: str
    process: asyncio.subprocess.Process
    tail: deque[str]
    forwarder: asyncio.Task[None]

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, spec: ServiceSpec, url: str) -> ServiceProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD_COMMAND,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=_child_environment(),
            start_new_session=True,  # Ctrl-C reaches the parent only; it stops us in order
            limit=LINE_LIMIT,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(spec.model_dump_json().encode() + b"\n")
        await process.stdin.drain()
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        forwarder = asyncio.create_task(
            _forward(process.stdout, tail), name=f"{spec.service}-output"
        )
        return cls(spec, url, process, tail, forwarder)

    async def probe(self, client: httpx.AsyncClient) -> str | None:
        """None once ``/health/ready`` answers 200, else the answer; raises if it exited."""
        if self.process.returncode is not None:
            raise await self.failure(f"exited with status {self.process.returncode}")
        try:
            response = await client.get(f"{self.url}/health/ready", timeout=2)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return None if response.status_code == 200 else response.text

    async def failure(self, what: str) -> PlatformError:
        """An error naming the service with its last output lines."""
        if self.process.returncode is not None:
            await asyncio.wait({self.forwarder}, timeout=2)  # collect its last words
        lines = "\n".join(f"  {line}" for line in self.tail) or "  (no output)"
        return PlatformError(f"{self.spec.service} {what}; its last output:\n{lines}")

    def terminate(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    async def stop(self, seconds: float = STOP_SECONDS) -> None:
        """SIGTERM (the service drains), at most ``seconds``, then SIGKILL."""
        self.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), seconds)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s: killed", self.spec.service, seconds)
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()
        await asyncio.wait({self.forwarder}, timeout=5)
        self.forwarder.cancel()


def _child_environment() -> dict[str, str]:
    """The parent's environment; a console log as wide (and as coloured) as the terminal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
    if sys.stderr.isatty():
        env.setdefault("FORCE_COLOR", "1")
    return env


async def _forward(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    """Copy the child's output to our stderr, keeping the last lines."""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # longer than LINE_LIMIT: dropped, not worth blocking the child
            tail.append("(a line too long to keep)")
            continue
        if not line:
            return
        text = line.decode(errors="replace")
        tail.append(text.rstrip())
        sys.stderr.write(text)
        sys.stderr.flush()

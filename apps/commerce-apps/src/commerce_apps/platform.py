"""The whole platform: infrastructure, migrations, topics and four services.

Used by ``commerce up`` and by the end-to-end tests. Without URLs it starts an embedded
PostgreSQL (one database per service) and an embedded Tansu broker.

By default the four services share this process and its event loop (the end-to-end tests
stop and start them one by one). With ``PlatformConfig(processes=True)`` each service runs in
a child process of its own (``commerce_apps.service.ServiceProcess``), so the platform can use
every core; the infrastructure, migrations and topics stay in this process, which stops the
children before the broker and PostgreSQL. If this process is killed outright (SIGKILL, the
OOM killer), the children notice (their stdin closes) and drain on their own, and a watchdog
process (``commerce_apps.watchdog``) then stops the embedded broker and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import httpx
import uvicorn
from adapters_kafka.embedded import EmbeddedBroker
from adapters_postgres.embedded import EmbeddedPostgres, held_by, running_on
from adapters_postgres.engine import create_databases, create_engine, with_database
from adapters_postgres.migrations import migrate
from adapters_postgres.outbox import requeue_published
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from commerce_apps.app import build_app
from commerce_apps.broker_errors import bootstrap_reasons, first_line, login_refused
from commerce_apps.container import (
    ServiceContainer,
    container_for,
    ensure_saga_topics,
)
from commerce_apps.settings import DEFAULT_PORTS, SERVICES, ServiceName, Settings
from commerce_apps.watchdog import Watchdog

if TYPE_CHECKING:
    from commerce_apps.service import ServiceProcess

log = logging.getLogger(__name__)


T = TypeVar("T")
KAFKA_PORT = 9092  # Kafka's usual port, in the default KAFKA_BOOTSTRAP_SERVERS


class PlatformError(Exception):
    """A start-up failure worth one clear line: port in use, database or broker unreachable."""


class PortInUse(PlatformError):
    """A port the platform needs is taken (by an earlier platform still running, often)."""


async def on_broker(servers: str, call: Awaitable[T], seconds: float | None = 30) -> T:
    """Await a broker call; an unreachable broker becomes one line, not a traceback (a
    ``PlatformError`` the call raised says something else, and passes as it is). A refused
    SASL login says so, and which settings to check."""
    with bootstrap_reasons() as reasons:  # aiokafka's ERROR lines would repeat ours
        try:
            return await asyncio.wait_for(call, seconds)
        except PlatformError:
            raise
        except TimeoutError as exc:  # wait_for's says nothing; a call's own may say more
            silent = not str(exc) and seconds is not None
            reason = f"no answer in {seconds:g} s" if silent else first_line(exc)
            raise PlatformError(f"broker unreachable at {servers}: {reason}") from None
        except Exception as exc:
            cause = reasons.cause(exc)
            line = login_refused(servers, cause)
            raise PlatformError(
                line or f"broker unreachable at {servers}: {first_line(cause)}"
            ) from None


DATABASE_FAILURES = (OSError, asyncpg.PostgresError, SQLAlchemyError)
"""What a database call raises when the server, the connection or the database fails."""


QUERY_SECRETS = ("password", "sslpassword")  # libpq takes a password in the query, too


def redacted(url: str) -> str:
    """A database URL fit to print: the password masked, in its user part or its query
    (``?password=``); one without a password (embedded PostgreSQL's ``postgres:@``) as it
    is, to be copied and pasted."""
    parsed = make_url(url)
    hidden = {key: "***" for key in QUERY_SECRETS if key in parsed.query}
    if not parsed.password and not hidden:
        return url
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("%2A%2A%2A", "***")  # the query's mask, unescaped


async def reach_database(
    what: str,
    url: str,
    seconds: float = 15,
    check: Callable[[AsyncEngine], Awaitable[bool]] | None = None,
) -> bool:
    """Connect once before the work: a server down, a wrong password or a missing database
    is then one line, ``<what> unreachable: <reason>``. ``check`` (``commerce run``'s: is it
    migrated?) replaces the bare connect, under the same deadline; its answer is returned."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with asyncio.timeout(seconds):
            if check is not None:
                return await check(engine)
            async with engine.connect():
                return True
    except TimeoutError:
        raise PlatformError(f"{what} unreachable: no answer in {seconds:g} s") from None
    except Exception as exc:
        raise PlatformError(f"{what} unreachable: {database_error(exc)}") from None
    finally:
        await engine.dispose()


async def on_database(what: str, call: Awaitable[T]) -> T:
    """Await work on a database that answered; a database failure (a permission, a lock, a
    missing table) becomes one line saying ``what`` failed, not a traceback."""
    try:
        return await call
    except DATABASE_FAILURES as exc:
        raise PlatformError(f"{what} failed: {database_error(exc)}") from None


def database_error(exc: BaseException) -> str:
    """The driver's own words: SQLAlchemy wraps them in its class name and a link."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return str(cause) or type(cause).__name__


def processes_pay_off() -> bool:
    """Whether a process per service beats one process on this machine: with two cores or more.

    Measured on 2 cores (docs/benchmarks.md): once consumers batch their transactions, one
    event loop serving all four services is the bottleneck (it waits, not computes); a
    process each nearly doubles throughput. On one core it only adds interpreters.
    """
    return (os.cpu_count() or 1) >= 2


@dataclass
class PlatformConfig:
    settings: Settings = field(default_factory=Settings)
    data_dir: Path = Path(".commerce")
    reset: bool = False
    database_url: str | None = None  # a server URL; one database per service is made on it
    database_prefix: str = ""
    kafka_bootstrap_servers: str | None = None
    broker_port: int | None = None  # of the embedded broker; None: any free port
    host: str = "127.0.0.1"
    ports: Mapping[ServiceName, int] = field(default_factory=dict)
    per_service: Mapping[ServiceName, Mapping[str, Any]] = field(default_factory=dict)
    consumer_options: Mapping[str, Any] | None = None
    span_exporter: Any = None  # an OpenTelemetry SpanExporter every service also sends to
    processes: bool = False  # each service in a child process of its own
    service_profile: Path | None = None  # process mode: cProfile each service, see profile_path


# Tansu holds a group join for about half the session timeout: keep it short when local.
# It answers a waiting fetch only when it looks again (at half the wait, then three quarters
# ...), so the wait trades idle fetching for each hop's delay. Measured on two cores
# (docs/benchmarks.md, sixth round): 25 ms against 10 halves the idle cost (24 % of a core
# against 45 %), gives 50 orders/s a 20 % lower p50 and c=64 8 % more orders/s, and costs
# 3 ms at 10 orders/s; 50 ms costs 25 ms there and gains nothing more.
EMBEDDED_CONSUMER_OPTIONS = {
    "fetch_max_wait_ms": 25,
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 500,
}


# A child process that dies is started again; this many times in this many seconds, then the
# platform stops (a service that cannot run would otherwise restart forever).
RESTARTS = 3
RESTART_WINDOW = 60.0


# Topics on the embedded broker get one partition unless TOPIC_PARTITIONS is set. The
# platform runs one replica per service, so more partitions buy no parallelism across
# replicas, only smaller batches (a transaction each) and more fetching: measured on two
# cores at c=64 (full sagas), 6 partitions 55 orders/s, 3: 72, 2: 89, 1: 104 to 114.
EMBEDDED_PARTITIONS = 1


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the platform (four share one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class _Running:
    container: ServiceContainer
    server: _Server
    task: asyncio.Task[None]


def _refuse_if_running(directory: Path, reset: bool) -> None:
    """Never two platforms on one data directory. ``--reset`` would delete it under the
    server; without it the second one joined the first's PostgreSQL beside a broker of its
    own, which nothing published to (its relays stood by for the first's)."""
    pid = running_on(directory)
    if pid is None:
        return
    if reset:
        raise PlatformError(
            f"--reset would delete {directory}, but PostgreSQL (pid {pid}) still runs on it: "
            "stop the platform using it first"
        )
    holders = held_by(directory)  # none: its platform was killed outright, take it over
    if holders:
        raise PlatformError(
            f"another platform (pid {holders[0]}) runs on {directory}: stop it first, "
            "or give another --data-dir"
        )


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn's server will, then let go: every address the host
    resolves to (``localhost``: ``::1`` and ``127.0.0.1``), IPv6 ones without IPv4."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in dict.fromkeys((family, address) for family, *_, address in found):
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is already in use") from None
        reason = exc.strerror or first_line(exc)
        raise PlatformError(f"cannot listen on {host}:{port}: {reason}") from None


def kafka_port_if_free() -> int | None:
    """Kafka's own port for the embedded broker where nothing holds it: the CLI's default
    ``KAFKA_BOOTSTRAP_SERVERS`` (``localhost:9092``) then finds it with nothing to set."""
    try:
        check_port_free("127.0.0.1", KAFKA_PORT)
    except PlatformError:
        return None
    return KAFKA_PORT


class Platform:
    def __init__(self, config: PlatformConfig) -> None:
        self.config = config
        self.database_urls: dict[str, str] = {}
        self.server_url = ""  # the PostgreSQL server the databases are on
        self._kept: set[str] = set()  # services whose database existed before this start
        self.bootstrap_servers = ""
        self.urls: dict[ServiceName, str] = {}
        self._postgres: EmbeddedPostgres | None = None
        self._broker: EmbeddedBroker | None = None
        self._running: dict[ServiceName, _Running] = {}
        self._children: dict[ServiceName, ServiceProcess] = {}
        self._process_metrics: str | None = None  # the in-process service exporting process_*
        self._watchdog: Watchdog | None = None  # with embedded infrastructure only
        self._stopping = False

    def port(self, service: ServiceName) -> int:
        return self.config.ports.get(service) or DEFAULT_PORTS[service]

    @property
    def pids(self) -> dict[ServiceName, int]:
        """The process serving each running service (this one unless in process mode)."""
        if self.config.processes:
            return {service: child.pid for service, child in self._children.items()}
        return {service: os.getpid() for service in self._running}

    @property
    def embedded_pids(self) -> dict[str, int]:
        """The embedded broker's and PostgreSQL's processes ("broker", "postgres"), if started."""
        pids = {
            "broker": self._broker and self._broker.pid,
            "postgres": self._postgres and self._postgres.pid,
        }
        return {name: pid for name, pid in pids.items() if pid}

    async def start(self) -> None:
        """Start everything; raise ``PlatformError`` with the reason if something cannot."""
        cfg = self.config
        if cfg.processes and cfg.span_exporter is not None:
            raise PlatformError("a span exporter needs the single-process mode")
        self._stopping = False
        for service in SERVICES:
            check_port_free(cfg.host, self.port(service))
        try:
            await self._start_database()
            await self._start_broker()
            await self._start_services()
        except BaseException:
            await self.stop()
            raise

    async def _start_database(self) -> None:
        cfg = self.config
        names = {service: f"{cfg.database_prefix}{service}" for service in SERVICES}
        if cfg.database_url is None:
            directory = cfg.data_dir.expanduser().resolve() / "postgres"
            _refuse_if_running(directory, cfg.reset)
            if cfg.reset and directory.exists():
                shutil.rmtree(directory)
            self._postgres = EmbeddedPostgres(directory)
            try:
                await asyncio.to_thread(self._postgres.start)
            except Exception as exc:  # initdb or pg_ctl failed: their output is in the log
                log.debug("embedded PostgreSQL failed to start", exc_info=True)
                raise PlatformError(
                    f"embedded PostgreSQL did not start on {directory} ({first_line(exc)}); "
                    "if that is not a data directory of an earlier platform, give another "
                    "--data-dir, or --reset to delete it"
                ) from None
            self._guarded().stop_postgres(directory)
            admin = self._postgres.admin_url
        else:
            admin = cfg.database_url
        # Two steps, two messages: a server that does not answer is "unreachable"; one that
        # answers but refuses a CREATE DATABASE (a role without CREATEDB) says so.
        shown = redacted(admin)
        await reach_database(f"database server {shown}", admin)
        creating = create_databases(admin, names.values())
        created = await on_database(f"creating the databases on {shown}", creating)
        self.server_url = admin
        self.database_urls = {s: with_database(admin, n) for s, n in names.items()}
        self._kept = {s for s, n in names.items() if n not in created}
        for service, url in self.database_urls.items():
            await on_database(f"{service} migration", migrate(url, service))

    async def _start_broker(self) -> None:
        cfg = self.config
        if cfg.kafka_bootstrap_servers is None:
            self._broker = EmbeddedBroker(port=cfg.broker_port)
            self.bootstrap_servers = await asyncio.to_thread(self._broker.start)
            assert self._broker.pid is not None
            self._guarded().stop_process(self._broker.pid)
        else:
            self.bootstrap_servers = cfg.kafka_bootstrap_servers
        await self._ensure_topics()
        if self._broker is not None:
            await self._requeue_outboxes()

    async def _requeue_outboxes(self) -> None:
        """A new embedded broker is empty: what the last one held and no consumer had read yet
        is lost with it, so every event the outboxes still keep is sent again (the inboxes
        skip those already applied). Only databases from before this start have any."""
        for service in sorted(self._kept):
            count = await requeue_published(self.database_urls[service])
            if count:
                log.info("%s: %d kept events to send again to the new broker", service, count)

    def pause_broker(self) -> None:
        """Freeze the embedded broker: an outage drill in which nothing it holds is lost."""
        if self._broker is None:
            raise PlatformError("the broker is not embedded")
        self._broker.pause()

    def resume_broker(self) -> None:
        if self._broker is None:
            raise PlatformError("the broker is not embedded")
        self._broker.resume()

    async def _ensure_topics(self) -> None:
        await on_broker(self.bootstrap_servers, ensure_saga_topics(self._settings_for("order")))

    def _settings_for(self, service: ServiceName) -> Settings:
        overrides: dict[str, Any] = {
            "database_url": self.database_urls.get(service),
            "kafka_bootstrap_servers": self.bootstrap_servers,
            **self.config.per_service.get(service, {}),
        }
        if (
            self._broker is not None
            and "topic_partitions" not in self.config.settings.model_fields_set
        ):
            overrides.setdefault("topic_partitions", EMBEDDED_PARTITIONS)
        return self.config.settings.model_copy(update=overrides)

    async def _start_services(self) -> None:
        for service in SERVICES:
            await self.start_service(service)
        await self.wait_ready()

    def _consumer_options(self) -> Mapping[str, Any] | None:
        options = self.config.consumer_options
        if options is None and self._broker is not None:
            options = EMBEDDED_CONSUMER_OPTIONS
        return options

    async def start_service(self, service: ServiceName) -> None:
        """Serve one service (again): its API, relay, consumer and sweeps."""
        cfg = self.config
        self.urls[service] = f"http://{cfg.host}:{self.port(service)}"
        if cfg.processes:
            await self._spawn(service)
            return
        container = container_for(service, self._settings_for(service))
        # One process serves several services: only the first exports the process's CPU and
        # memory (again after a restart of its own), so that a sum over services is right.
        self._process_metrics = self._process_metrics or service
        container.process_metrics.override(service == self._process_metrics)
        options = self._consumer_options()
        if options is not None:
            container.consumer_options.override(dict(options))
        if cfg.span_exporter is not None:
            container.span_exporter.override(cfg.span_exporter)
        config = uvicorn.Config(
            build_app(container),
            host=cfg.host,
            port=self.port(service),
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        server = _Server(config)
        task = asyncio.create_task(server.serve(), name=f"{service}-http")
        self._running[service] = _Running(container, server, task)
        while not server.started:
            if task.done():
                raise PlatformError(f"{service} failed to start: {task.exception()!r}")
            await asyncio.sleep(0.02)

    async def _spawn(self, service: ServiceName) -> None:
        """The service in a child process, with this platform's settings for it."""
        from commerce_apps.service import STOP_SECONDS, ServiceProcess, ServiceSpec

        cfg = self.config
        settings = self._settings_for(service).model_copy(
            update={"host": cfg.host, "port": self.port(service)}
        )
        options = self._consumer_options()
        profile = cfg.service_profile
        spec = ServiceSpec(
            service=service,
            settings=settings,
            consumer_options=None if options is None else dict(options),
            topics_ready=True,
            profile=None if profile is None else str(profile_path(profile, service)),
        )
        child = self._children[service] = await ServiceProcess.start(spec, self.urls[service])
        if self._watchdog is not None:  # it stops on its own; the infrastructure waits for it
            self._watchdog.stop_process(child.pid, None, STOP_SECONDS)

    async def stop_service(self, service: ServiceName) -> None:
        child = self._children.pop(service, None)
        if child is not None:
            await child.stop()
        running = self._running.pop(service, None)
        if running is not None:
            running.server.should_exit = True
            await asyncio.gather(running.task, return_exceptions=True)

    async def wait_ready(self, seconds: float = 60) -> None:
        """Until every consumer joined its group and every service answers ready."""
        if self.config.processes:
            await self._wait_children_ready(seconds)
            return
        async with asyncio.timeout(seconds):
            while not all(r.container.consumer().ready for r in self._running.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.05)

    async def _wait_children_ready(self, seconds: float) -> None:
        """Until each child answers 200 on ``/health/ready`` (its consumer joined, too)."""
        with _quiet("httpx"):
            async with httpx.AsyncClient() as client:
                await self._poll_ready(client, seconds)

    async def _poll_ready(self, client: httpx.AsyncClient, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        waiting = dict(self._children)
        while waiting:
            answers = {service: await child.probe(client) for service, child in waiting.items()}
            waiting = {s: child for s, child in waiting.items() if answers[s] is not None}
            if waiting and loop.time() > deadline:
                service, child = next(iter(waiting.items()))
                late = f"was not ready within {seconds:.0f} s (last answer: {answers[service]})"
                raise await child.failure(late)
            await asyncio.sleep(0.1 if waiting else 0)

    async def wait(self) -> None:
        """Until every server stopped (after ``request_stop`` or a failure).

        ``asyncio.wait``, not ``gather``: cancelling the waiter (Ctrl-C) must not cancel
        the servers, which then could not drain their consumers and relays. In process
        mode: a child that dies is started again (``_wait_children``); a ``PlatformError``
        once one keeps dying.
        """
        if self._children:
            await self._wait_children()
            return
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.wait(tasks)

    async def _wait_children(self) -> None:
        """A child that dies (the OOM killer, a crash) is started again, its last output
        logged: the others, the broker (in memory) and PostgreSQL go on. One that keeps
        dying (``RESTARTS`` times within ``RESTART_WINDOW``) ends the platform."""
        loop = asyncio.get_running_loop()
        restarted: dict[ServiceName, list[float]] = {}
        while self._children:
            exits = {asyncio.ensure_future(c.process.wait()): c for c in self._children.values()}
            try:
                done, _ = await asyncio.wait(exits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in exits:
                    waiter.cancel()
            child = exits[next(iter(done))]
            if self._stopping:
                return
            service = child.spec.service
            if self._children.get(service) is not child:
                continue  # stopped or replaced on purpose (stop_service)
            now = loop.time()
            recent = [t for t in restarted.get(service, []) if now - t < RESTART_WINDOW]
            failure = await child.failure(f"exited with status {child.process.returncode}")
            if len(recent) >= RESTARTS:
                raise PlatformError(
                    f"{failure} (started again {len(recent)} times in {RESTART_WINDOW:.0f} s)"
                )
            log.error("%s; starting it again", failure)
            restarted[service] = [*recent, now]
            await child.stop()  # its output forwarded to the end
            await self.start_service(service)

    def request_stop(self) -> None:
        self._stopping = True
        for child in self._children.values():
            child.terminate()
        for running in self._running.values():
            running.server.should_exit = True

    async def stop(self) -> None:
        """Services first (they drain their consumers and relays), then broker, PostgreSQL."""
        self.request_stop()
        children, self._children = self._children, {}
        await asyncio.gather(*(child.stop() for child in children.values()))
        await self.wait()
        self._running = {}
        if self._broker is not None:
            await asyncio.to_thread(self._broker.stop)
            self._broker = None
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.stop)
            self._postgres = None
        if self._watchdog is not None:
            await asyncio.to_thread(self._watchdog.close)
            self._watchdog = None

    def _guarded(self) -> Watchdog:
        """The watchdog that stops the embedded infrastructure if this process is killed."""
        if self._watchdog is None:
            self._watchdog = Watchdog()
        return self._watchdog


@contextlib.contextmanager
def _quiet(logger: str, below: int = logging.WARNING) -> Iterator[None]:
    """No lines under ``below`` from ``logger`` inside (httpx logs every readiness probe)."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(max(level, below))
    try:
        yield
    finally:
        target.setLevel(level)


def profile_path(base: Path, service: ServiceName) -> Path:
    """``platform.prof`` → ``platform.order.prof``: one cProfile file per service process."""
    return base.with_name(f"{base.stem}.{service}{base.suffix}")

"""What every CLI command shares: settings, one-line errors, and running async work."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from commerce_apps.logs import configure_logging
from commerce_apps.platform import PlatformError
from commerce_apps.settings import SERVICES, ServiceName, Settings

console = Console(stderr=True, emoji=False)  # "host:abc:" in a message is no emoji code
T = TypeVar("T")


# What SQLAlchemy adds to a driver's error: its class name first, a link on a second line.
_SQLALCHEMY_WRAPPING = re.compile(
    r"\(sqlalchemy\.[\w.]+\) |\s*\(Background on this error at: [^)]*\)"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
URL_SHAPE = "postgresql://user:password@host:port/database"


def fail(message: str) -> typer.Exit:
    """One line on stderr and exit status 1, whatever the message was built from (a
    ``PlatformError`` may quote a SQLAlchemy error, which spans two lines)."""
    line = " ".join(_SQLALCHEMY_WRAPPING.sub("", message).split())
    console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def load_settings() -> Settings:
    """The settings from the environment; a bad value is one line and exit 1."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]).upper()
        raise fail(f"bad setting {where}: {first['msg']}") from None


def service_name(name: str) -> ServiceName:
    if name not in SERVICES:
        raise fail(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    return name


def postgres_url(url: str, source: str) -> str:
    """``url`` if it is a PostgreSQL URL; else one line naming where it came from, at once,
    rather than SQLAlchemy's traceback from wherever the URL is first used.

    The URL itself is not echoed: where it does not parse, no mask can tell its password
    (``postgresql//user:s3cret@host``, ``user:p@ss@host``); only a scheme other than
    PostgreSQL's is named.
    """
    from adapters_postgres.engine import async_url
    from sqlalchemy.exc import ArgumentError

    try:
        async_url(url)
    except (ArgumentError, ValueError):
        scheme = _SCHEME.match(url)
        given = "" if scheme is None or scheme[1].lower().startswith("postgres") else scheme[1]
        said = f"the scheme is {given!r}; " if given else ""
        raise fail(f"{source} is not a PostgreSQL URL: {said}expected {URL_SHAPE}") from None
    return url


def checked_server_url(url: str) -> str:
    """A server URL from ``--database-url`` or ``COMMERCE_DATABASE_URL``, checked; a bad one
    is named as the user gave it (the same text in both can be named either way)."""
    from_env = os.environ.get("COMMERCE_DATABASE_URL") == url
    return postgres_url(url, "COMMERCE_DATABASE_URL" if from_env else "--database-url")


def service_database_url(settings: Settings) -> str:
    """A service's own database: ``DATABASE_URL``, which must be set and be a PostgreSQL URL."""
    if not settings.database_url:
        raise fail("DATABASE_URL is not set")
    return postgres_url(settings.database_url, "DATABASE_URL")


def database_targets(service: str | None, server_url: str | None) -> dict[ServiceName, str]:
    """Each service's database: one on ``DATABASE_URL``, or all four on a server URL
    (``--database-url``, or ``COMMERCE_DATABASE_URL``). A service named with only a server
    URL gets its database there, as ``commerce up`` names it (before, the server URL was
    ignored and the command said ``DATABASE_URL is not set``)."""
    from adapters_postgres.engine import with_database

    if service is not None:
        name = service_name(service)
        settings = load_settings()
        if not settings.database_url and server_url:
            return {name: with_database(checked_server_url(server_url), name)}
        return {name: service_database_url(settings)}
    if server_url:
        checked_server_url(server_url)
        return {name: with_database(server_url, name) for name in SERVICES}
    raise fail("name a service (with DATABASE_URL) or set COMMERCE_DATABASE_URL")


# Young objects collected every 20,000 net allocations rather than 700: a relayed batch or
# a consumed one allocates tens of thousands, and each collection also walked the survivors.
GC_THRESHOLDS = (20_000, 20, 100)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running process that allocates fast.

    Everything alive after start-up (modules, classes, compiled statements) is frozen out of
    the collector's walks, and the young generation is collected far less often. Measured on
    ``commerce bench relay``: with the collector as it comes, it took 12 µs to turn an outbox
    row into a message; with it off, 5.5; events/s went from about 16,500 to about 21,000.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed: cheaper sockets for every hop."""
    tune_gc()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main``; stop gracefully on SIGINT/SIGTERM/SIGHUP; turn known failures into one line."""
    try:
        return run_fast(_with_signals(main))
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: a clean stop
        raise typer.Exit(0) from None
    except PlatformError as exc:
        raise fail(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None


def quiet_logs() -> None:
    """Admin commands speak in one-line results and errors; library logs would only repeat."""
    configure_logging("console", "CRITICAL")


async def _with_signals(main: Callable[[], Awaitable[T]]) -> T:
    """``main``, cancelled by SIGINT, SIGTERM or SIGHUP (the terminal closed): a clean stop.

    A cancellation no signal asked for (a library's CancelledError leaking out) is an error,
    not a silent exit 0 that looks like success.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main())
    signalled: list[int] = []

    def stop(sig: int) -> None:
        signalled.append(sig)
        task.cancel()

    if threading.current_thread() is threading.main_thread():  # not so under a test runner
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if signalled:
            raise
        raise PlatformError(
            "the command was cancelled from inside (a bug: please report it)"
        ) from None

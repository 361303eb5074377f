"""``--embedded``: the whole platform as ``commerce up`` runs it, in a child process.

The platform gets its own process, so the load generator does not share an event loop with
it; and like ``commerce up`` on a multi-core machine, the platform runs each service in a
process of its own (``processes=False``: all four in the platform process, one event loop).
With a cProfile file, each service process writes its own (``platform.prof`` →
``platform.order.prof``, …; merge them with ``pstats.Stats(*files)``); in the single-process
mode the platform process writes the one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import asyncpg
from adapters_kafka.embedded import free_port
from adapters_postgres.engine import plain_url

from commerce_apps.platform import PlatformConfig, PlatformError, processes_pay_off
from commerce_apps.settings import SERVICES, ServiceName


@dataclass(frozen=True)
class _Plan:
    """What the platform process needs (picklable: it crosses the spawn)."""

    data_dir: str
    ports: dict[ServiceName, int]
    log_level: str
    processes: bool
    profile: str | None
    stock: int | None = None


def _config(plan: _Plan) -> PlatformConfig:
    from commerce_apps.settings import Settings

    # What ``commerce up`` reads (environment and .env), logging as the services will.
    settings = Settings().model_copy(update={"log_format": "console", "log_level": plan.log_level})
    profile = plan.profile if plan.processes else None
    return PlatformConfig(
        settings=settings,
        data_dir=Path(plan.data_dir),
        reset=True,
        ports=plan.ports,
        processes=plan.processes,
        service_profile=None if profile is None else Path(profile),
    )


def _serve(conn: Connection, plan: _Plan) -> None:
    from commerce_apps.console import run_fast
    from commerce_apps.logs import configure_logging
    from commerce_apps.platform import Platform

    configure_logging("console", plan.log_level)
    logging.getLogger("uvicorn.error").setLevel(plan.log_level)

    async def main() -> None:
        platform = Platform(_config(plan))
        try:
            await platform.start()
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            raise
        try:
            if plan.stock is not None:
                await restock(platform.database_urls["inventory"], plan.stock)
            conn.send(("up", platform.urls["order"], platform.bootstrap_servers))
            await asyncio.to_thread(conn.recv)  # any message (or the parent gone): stop
        except EOFError:
            pass
        finally:
            await platform.stop()

    run_fast(main())  # the event loop ``commerce up`` runs on


async def restock(inventory_url: str, units: int) -> None:
    """Give every product ``units`` in stock, so that sagas confirm instead of running dry.

    The seeded 455 units last about 200 orders; past that a run measures rejections.
    """
    conn = await asyncpg.connect(plain_url(inventory_url))
    try:
        await conn.execute("UPDATE products SET stock = $1", units)
    finally:
        await conn.close()


def _child(conn: Connection, plan: _Plan) -> None:
    from commerce_apps.service import profiled

    # In process mode the services profile themselves, a file each.
    profiled(None if plan.processes else plan.profile, lambda: _serve(conn, plan))


@contextlib.asynccontextmanager
async def embedded_platform(
    log_level: str = "WARNING",
    profile: Path | None = None,
    start_timeout: float = 180.0,
    processes: bool | None = None,
    stock: int | None = None,
) -> AsyncIterator[tuple[str, str]]:
    """A fresh platform (temporary data, reset, free ports); yields (order URL, broker)."""
    data_dir = tempfile.mkdtemp(prefix="commerce-bench-")
    plan = _Plan(
        data_dir=data_dir,
        ports={service: free_port() for service in SERVICES},
        log_level=log_level,
        processes=processes_pay_off() if processes is None else processes,
        profile=str(profile) if profile else None,
        stock=stock,
    )
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_child, args=(child, plan), name="commerce-bench-platform")
    process.start()
    child.close()
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(_receive, parent), start_timeout)
        if ready[0] != "up":
            raise PlatformError(f"the embedded platform did not start: {ready[1]}")
        yield ready[1], ready[2]
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        await asyncio.to_thread(process.join, 60)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join)
        parent.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _receive(conn: Connection) -> tuple[str, ...]:
    """("up", order URL, broker) or ("error", why)."""
    try:
        message = conn.recv()
    except EOFError:
        return ("error", "the platform process exited")
    return tuple(str(part) for part in message)

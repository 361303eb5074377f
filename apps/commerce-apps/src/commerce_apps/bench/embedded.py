"""``--embedded``: the whole platform as ``commerce up`` runs it, in a child process.

The platform gets its own process (and so its own core and event loop), so the load
generator does not steal the platform's CPU. The child optionally runs under cProfile.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import multiprocessing
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path

from commerce_apps.platform import PlatformError
from commerce_apps.settings import SERVICES, ServiceName


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(conn: Connection, data_dir: str, ports: dict[ServiceName, int], log_level: str) -> None:
    from commerce_apps.logs import configure_logging
    from commerce_apps.platform import Platform, PlatformConfig
    from commerce_apps.settings import Settings

    settings = Settings()  # what ``commerce up`` reads: environment and .env
    configure_logging("console", log_level)
    logging.getLogger("uvicorn.error").setLevel(log_level)

    async def main() -> None:
        platform = Platform(
            PlatformConfig(settings=settings, data_dir=Path(data_dir), reset=True, ports=ports)
        )
        try:
            await platform.start()
        except BaseException as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            raise
        try:
            conn.send(("up", platform.urls["order"]))
            await asyncio.to_thread(conn.recv)  # any message (or the parent gone): stop
        except EOFError:
            pass
        finally:
            await platform.stop()

    asyncio.run(main())


def _child(
    conn: Connection,
    data_dir: str,
    ports: dict[ServiceName, int],
    log_level: str,
    profile: str | None,
) -> None:
    if profile is None:
        _serve(conn, data_dir, ports, log_level)
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(_serve, conn, data_dir, ports, log_level)
    finally:
        profiler.dump_stats(profile)


@contextlib.asynccontextmanager
async def embedded_platform(
    log_level: str = "WARNING", profile: Path | None = None, start_timeout: float = 180.0
) -> AsyncIterator[str]:
    """A fresh platform (temporary data, reset, free ports); yields the order service URL."""
    data_dir = tempfile.mkdtemp(prefix="commerce-bench-")
    ports: dict[ServiceName, int] = {service: free_port() for service in SERVICES}
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_child,
        args=(child, data_dir, ports, log_level, str(profile) if profile else None),
        name="commerce-bench-platform",
    )
    process.start()
    child.close()
    try:
        ready = await asyncio.wait_for(asyncio.to_thread(_receive, parent), start_timeout)
        if ready[0] != "up":
            raise PlatformError(f"the embedded platform did not start: {ready[1]}")
        yield ready[1]
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        await asyncio.to_thread(process.join, 60)
        if process.is_alive():
            process.kill()
            await asyncio.to_thread(process.join)
        parent.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _receive(conn: Connection) -> tuple[str, str]:
    try:
        kind, value = conn.recv()
    except EOFError:
        return ("error", "the platform process exited")
    return (str(kind), str(value))

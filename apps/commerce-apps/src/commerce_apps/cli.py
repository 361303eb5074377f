"""The ``commerce`` command: run the platform or one service, migrate, topics, dead letters."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from commerce_apps.logs import configure_logging
from commerce_apps.platform import Platform, PlatformConfig, PlatformError
from commerce_apps.settings import SERVICES, ServiceName, Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
dlt_app = typer.Typer(no_args_is_help=True, help="Inspect and replay dead letters.")
app.add_typer(dlt_app, name="dlt")
console = Console(stderr=True)
T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    """One line on stderr and exit status 1."""
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]).upper()
        raise fail(f"bad setting {where}: {first['msg']}") from None


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main``; stop gracefully on SIGINT/SIGTERM; turn known failures into one line."""
    try:
        return asyncio.run(_with_signals(main))
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: a clean stop
        raise typer.Exit(0) from None
    except PlatformError as exc:
        raise fail(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None


async def _with_signals(main: Callable[[], Awaitable[T]]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await task


def _banner(platform: Platform) -> None:
    table = Table(title="Event-Driven Commerce Platform is up", title_justify="left")
    table.add_column("service")
    table.add_column("API")
    table.add_column("docs")
    for name, api in platform.urls.items():
        table.add_row(name, api, f"{api}/docs")
    Console().print(table)
    Console().print(f"Kafka bootstrap: {platform.bootstrap_servers}")
    for db, url in platform.database_urls.items():
        Console().print(f"PostgreSQL {db}: {url}", highlight=False)
    Console().print("Press Ctrl-C to stop.")


@app.command()
def up(
    data_dir: Annotated[Path, typer.Option(help="Where embedded PostgreSQL keeps its data")] = Path(
        ".commerce"
    ),
    reset: Annotated[bool, typer.Option(help="Delete the embedded data first")] = False,
    database_url: Annotated[
        str | None,
        typer.Option(envvar="COMMERCE_DATABASE_URL", help="PostgreSQL server (else embedded)"),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap (else embedded)"),
    ] = None,
    host: str = "127.0.0.1",
) -> None:
    """Run the whole platform in one process: infrastructure, migrations, topics, four APIs."""
    settings = load_settings()
    configure_logging("console", settings.log_level)
    config = PlatformConfig(
        settings=settings,
        data_dir=data_dir,
        reset=reset,
        database_url=database_url,
        kafka_bootstrap_servers=kafka,
        host=host,
    )

    async def main() -> None:
        platform = Platform(config)
        await platform.start()
        try:
            _banner(platform)
            await platform.wait()
        finally:
            await asyncio.shield(platform.stop())

    run_async(main)


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="order|inventory|payment|notification")],
) -> None:
    """One service against external PostgreSQL (DATABASE_URL) and Kafka: a container's command."""
    name = _service(service)
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    if not settings.database_url:
        raise fail("DATABASE_URL is not set")

    from commerce_apps.service import serve_one

    try:
        asyncio.run(serve_one(name, settings))  # uvicorn handles SIGINT/SIGTERM itself
    except PlatformError as exc:
        raise fail(str(exc)) from None


@app.command()
def migrate(
    service: Annotated[str | None, typer.Argument(help="one service, on DATABASE_URL")] = None,
    server_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="COMMERCE_DATABASE_URL",
            help="without a service: the server on which each service gets its database",
        ),
    ] = None,
) -> None:
    """Apply the migrations of one service (DATABASE_URL), or of all four on one server."""
    from adapters_postgres.engine import create_databases, with_database
    from adapters_postgres.migrations import migrate as apply

    if service is not None:
        url = load_settings().database_url
        if not url:
            raise fail("DATABASE_URL is not set")
        targets = {_service(service): url}
    elif server_url:
        targets = {name: with_database(server_url, name) for name in SERVICES}
    else:
        raise fail("name a service (with DATABASE_URL) or set COMMERCE_DATABASE_URL")

    async def main() -> None:
        if service is None and server_url:
            await create_databases(server_url, SERVICES)
        for name, url in targets.items():
            await apply(url, name)
            Console().print(f"{name}: migrated to head")

    run_async(main)


@app.command()
def topics() -> None:
    """Create the saga topics and their dead-letter topics (idempotent)."""
    from adapters_kafka.topics import ensure_topics
    from core_saga.messages import SAGA_TOPICS

    from commerce_apps.container import kafka_settings

    settings = load_settings()

    async def main() -> None:
        created = await asyncio.wait_for(
            ensure_topics(
                kafka_settings(settings, "admin"), SAGA_TOPICS, partitions=settings.topic_partitions
            ),
            30,
        )
        Console().print(f"created: {', '.join(created) or 'none (all existed)'}")

    run_async(main)


def _service(name: str) -> ServiceName:
    if name not in SERVICES:
        raise fail(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
    return name


def main() -> None:
    from commerce_apps import bench as _bench  # noqa: F401  (registers the bench commands)
    from commerce_apps import dlt as _dlt  # noqa: F401  (registers the dlt commands)

    app(prog_name="commerce")


if __name__ == "__main__":  # pragma: no cover
    main()

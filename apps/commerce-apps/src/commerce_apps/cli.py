"""The commerce command: run the platform or one service, migrate, topics, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from dotenv import dotenv_values
from rich.console import Console
from rich.table import Table

from commerce_apps.app import VERSION
from commerce_apps.console import (
    checked_server_url,
    database_targets,
    fail,
    load_settings,
    quiet_logs,
    run_async,
    run_fast,
    service_database_url,
    service_name,
)
from commerce_apps.dlt import dlt_app
from commerce_apps.logs import configure_logging
from commerce_apps.outbox_commands import outbox_app
from commerce_apps.platform import (
    KAFKA_PORT,
    Platform,
    PlatformConfig,
    PlatformError,
    PortInUse,
    kafka_port_if_free,
    on_broker,
    on_database,
    processes_pay_off,
    reach_database,
    redacted,
)
from commerce_apps.settings import DEFAULT_PORTS, SERVICES

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(dlt_app, name="dlt")
app.add_typer(outbox_app, name="outbox")

# Options that fall back on a variable (typer reads only the process environment for them)
OPTION_VARIABLES = ("COMMERCE_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"commerce {VERSION}")
        raise typer.Exit()


@app.callback()
def _dotenv_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Those variables come from ``.env`` too, as every setting does (the environment wins):
    ``COMMERCE_DATABASE_URL`` in ``.env`` was ignored by ``migrate`` and ``outbox resend``."""
    for name, value in dotenv_values(".env").items():
        if name in OPTION_VARIABLES and value is not None:
            os.environ.setdefault(name, value)


def _banner(platform: Platform) -> None:
    table = Table(title="Event-Driven Commerce Platform is up", title_justify="left")
    table.add_column("service")
    table.add_column("API")
    table.add_column("docs")
    table.add_column("pid")
    pids = platform.pids
    for name, api in platform.urls.items():
        table.add_row(name, api, f"{api}/docs", str(pids.get(name, "")))
    Console().print(table)
    Console().print(f"Kafka bootstrap: {platform.bootstrap_servers}")
    if not platform.bootstrap_servers.endswith(f":{KAFKA_PORT}"):  # the CLI default misses it
        Console().print(
            f"For commerce dlt and topics in another shell: "
            f"export KAFKA_BOOTSTRAP_SERVERS={platform.bootstrap_servers} "
            f"(commerce bench: --kafka {platform.bootstrap_servers})",
            highlight=False,
            soft_wrap=True,  # one line, to be pasted
        )
    for db, url in platform.database_urls.items():
        # Unwrapped however narrow the terminal: a URL broken over two lines cannot be pasted.
        Console().print(f"PostgreSQL {db}: {redacted(url)}", highlight=False, soft_wrap=True)
    if platform.server_url:
        Console().print(
            f"For commerce migrate and outbox resend (all four): "
            f"export COMMERCE_DATABASE_URL='{redacted(platform.server_url)}'",
            highlight=False,
            soft_wrap=True,
        )
    Console().print("Press Ctrl-C to stop.")


def _from_environment(ctx: typer.Context, option: str) -> bool:
    source = ctx.get_parameter_source(option)  # typer's own click: compared by name
    return source is not None and source.name == "ENVIRONMENT"


@app.command()
def up(
    ctx: typer.Context,
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
    base_port: Annotated[
        int,
        typer.Option(
            min=1,
            max=65532,
            help="The order service's port; payment, inventory and notification take the "
            "next three (8081-8084 by default)",
        ),
    ] = DEFAULT_PORTS["order"],
    processes: Annotated[
        bool,
        typer.Option(
            "--processes/--single-process",
            help="Each service in a process of its own, so the platform can use every core "
            "(the default with two cores or more); or all four services in this process, on "
            "one event loop",
        ),
    ] = processes_pay_off(),
) -> None:
    """Run the whole platform: infrastructure, migrations, topics, the four APIs."""
    if database_url is not None:
        checked_server_url(database_url)
    settings = load_settings()
    configure_logging("console", settings.log_level)
    config = PlatformConfig(
        settings=settings.model_copy(update={"log_format": "console"}),  # the services' too
        data_dir=data_dir,
        reset=reset,
        database_url=database_url,
        kafka_bootstrap_servers=kafka,
        broker_port=None if kafka else kafka_port_if_free(),
        host=host,
        ports={
            service: base_port - DEFAULT_PORTS["order"] + DEFAULT_PORTS[service]
            for service in SERVICES
        },
        processes=processes,
    )

    # A server named by a variable, perhaps exported for another command: say which one
    inherited = {
        shown: variable
        for name, variable, shown in (
            ("kafka", "KAFKA_BOOTSTRAP_SERVERS", kafka),
            ("database_url", "COMMERCE_DATABASE_URL", database_url and redacted(database_url)),
        )
        if shown and _from_environment(ctx, name)
    }

    async def main() -> None:
        platform = Platform(config)
        try:
            await platform.start()
        except PortInUse as exc:
            raise PlatformError(f"{exc} (--base-port moves the four APIs elsewhere)") from None
        except PlatformError as exc:
            named = [v for shown, v in inherited.items() if shown in str(exc)]
            if not named:
                raise
            hint = f"{named[0]} names it: unset it to start an embedded one"
            raise PlatformError(f"{exc} ({hint})") from None
        try:
            _banner(platform)
            await platform.wait()
        finally:
            # Stop to the end (it is bounded): a second Ctrl-C, or the SIGINT that `uv run`
            # forwards, must not cut short the services' drain or leave them for the broker.
            stopping = asyncio.ensure_future(platform.stop())
            while not stopping.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(stopping)
            stopping.result()

    run_async(main)


@app.command()
def run(
    service: Annotated[str, typer.Argument(help="order|inventory|payment|notification")],
) -> None:
    """One service against external PostgreSQL (DATABASE_URL) and Kafka: a container's command."""
    name = service_name(service)
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    service_database_url(settings)

    from commerce_apps.service import exit_zero_on_sigterm, serve_one

    exit_zero_on_sigterm()
    try:
        # OTEL_SERVICE_NAME names the one service of this process (commerce up ignores it)
        traced_as = os.environ.get("OTEL_SERVICE_NAME")
        run_fast(serve_one(name, settings, service_name=traced_as))  # drains on SIGTERM
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
    from adapters_postgres.engine import create_databases
    from adapters_postgres.migrations import migrate as apply

    targets = database_targets(service, server_url)
    quiet_logs()
    # A revision waiting for a table lock says so, each time it gives way and tries again.
    logging.getLogger("adapters_postgres.migrations").setLevel(logging.WARNING)

    async def main() -> None:
        if service is None and server_url:
            shown = redacted(server_url)
            await reach_database(f"database server {shown}", server_url)
            creating = create_databases(server_url, SERVICES)
            await on_database(f"creating the databases on {shown}", creating)
        for name, url in targets.items():
            await reach_database(f"{name} database", url)
            await on_database(f"{name} migration", apply(url, name))
            Console().print(f"{name}: migrated to head")

    run_async(main)


@app.command()
def topics() -> None:
    """Create the saga topics and their dead-letter topics (idempotent)."""
    from commerce_apps.container import ensure_saga_topics

    settings = load_settings()
    quiet_logs()

    async def main() -> None:
        created = await on_broker(
            settings.kafka_bootstrap_servers,
            ensure_saga_topics(settings),
        )
        Console().print(f"created: {', '.join(created) or 'none (all existed)'}")

    run_async(main)


def main() -> None:
    from commerce_apps import bench as _bench  # noqa: F401  (registers the bench commands)

    app(prog_name="commerce")


if __name__ == "__main__":  # pragma: no cover
    main()

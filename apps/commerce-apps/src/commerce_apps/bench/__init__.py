"""``commerce bench``: load the running (or an embedded) platform, or time the outbox relay.

``commerce bench [--embedded] [--orders N] [--concurrency C | --rate R] [--json] [--plot F]``
places orders and waits for each to end; ``commerce bench relay --events N [--profile seed]``
measures the outbox relay alone. Imported by ``commerce_apps.cli.main``, which registers it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from adapters_kafka.settings import KafkaSettings
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from commerce_apps.bench.load import LoadConfig, LoadRun, check_reachable
from commerce_apps.bench.plot import unwritable, write_plot
from commerce_apps.bench.relay import RelayBenchConfig, run_relay_bench
from commerce_apps.bench.report import LoadResult, print_table
from commerce_apps.cli import app
from commerce_apps.console import fail, postgres_url, quiet_logs, run_async
from commerce_apps.platform import on_broker, processes_pay_off
from commerce_apps.settings import DEFAULT_PORTS, log_level_name

bench_app = typer.Typer(
    help="Place orders and time each saga to its end (the relay subcommand: the outbox alone)."
)
app.add_typer(bench_app, name="bench")
err = Console(stderr=True)
CLOSED_LOOP = LoadConfig.concurrency  # sagas in flight when neither mode is given
ORDER_URL_SHAPE = "http://host:port"


def _timeout(seconds: float) -> float:
    """``--timeout``: at 0 or below every order would count as timed out."""
    if not 0 < seconds < math.inf:
        raise typer.BadParameter("must be finite and above 0")
    return seconds


def _pause(seconds: float) -> float:
    """``--poll-interval``: below 0 the poller would spin; NaN or infinity would stall it."""
    if not 0 <= seconds < math.inf:
        raise typer.BadParameter("must be finite and 0 or more")
    return seconds


def _level(level: str) -> str:
    """``--log-level``: a typo failed once the embedded platform configured its logging."""
    try:
        return log_level_name(level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


DEFAULT_ORDER_URL = f"http://127.0.0.1:{DEFAULT_PORTS['order']}"


def _order_url_problem(url: str) -> str | None:
    """What keeps ``url`` from being the order service's base URL, or ``None``."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number from 0 to 65535 raises
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return f"the scheme is {parts.scheme!r}, not http or https" if parts.scheme else "no scheme"
    if not parts.hostname:
        return "no host"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "a base URL has no path, query or fragment"
    return None


def _check_inputs(order_url: str, plot: Path | None) -> None:
    """Before anything connects: aiohttp's complaints about a URL named no option (another
    scheme even ended in a traceback), and a plot path found bad only after the run lost it."""
    problem = _order_url_problem(order_url)
    if problem is not None:
        raise fail(f"--order-url {order_url!r}: {problem}; expected {ORDER_URL_SHAPE}")
    problem = None if plot is None else unwritable(plot)
    if problem is not None:
        raise fail(f"--plot {plot}: {problem}")


def _save_plot(path: Path, result: LoadResult, summary: dict[str, Any]) -> None:
    """After the summary is out: a plot that still cannot be written costs the picture only."""
    try:
        write_plot(path, result.completions, summary["latency_ms"]["p99"])
    except OSError as exc:
        raise fail(f"--plot {path}: not written: {exc.strerror or exc}") from None


def _emit(title: str, summary: dict[str, Any], as_json: bool) -> None:
    print_table(title, summary, err if as_json else Console())
    if as_json:
        print(json.dumps(summary), flush=True)  # the last line of stdout


async def _drive(config: LoadConfig, quiet: bool) -> LoadResult:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, disable=quiet) as progress:
        bars = {
            "posted": progress.add_task("posted  ", total=config.orders),
            "terminal": progress.add_task("terminal", total=config.orders),
        }
        return await LoadRun(config, lambda what: progress.advance(bars[what])).run()


async def _broker_answers(kafka: KafkaSettings) -> None:
    """Connect once before the run: the event watcher connects inside ``LoadRun``, where an
    unreachable broker ended the command in a traceback rather than a line."""
    from adapters_kafka.publisher import KafkaPublisher

    # A producer, not a consumer: aiokafka's consumer stopped right after its start raises
    # CancelledError from its close, which ended the command as if interrupted (exit 0).
    async with KafkaPublisher(kafka):
        pass


def _kafka(bootstrap_servers: str) -> KafkaSettings:
    """``bootstrap_servers`` with the security settings the services read (KAFKA_*)."""
    from commerce_apps.console import load_settings
    from commerce_apps.container import kafka_settings

    settings = load_settings().model_copy(update={"kafka_bootstrap_servers": bootstrap_servers})
    return kafka_settings(settings, "bench")


@bench_app.callback(invoke_without_command=True)
def load_command(
    ctx: typer.Context,
    order_url: Annotated[
        str | None,
        typer.Option(help="Order service of a running platform", show_default=DEFAULT_ORDER_URL),
    ] = None,
    embedded: Annotated[bool, typer.Option(help="Start a fresh platform for the run")] = False,
    orders: Annotated[int, typer.Option(min=1)] = 3000,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help=f"Sagas in flight (closed loop, the default: {CLOSED_LOOP})"),
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Orders per second (open loop, instead of --concurrency)")
    ] = None,
    poll_interval: Annotated[
        float, typer.Option(callback=_pause, help="Seconds between poll rounds")
    ] = 0.005,
    poll_parallel: Annotated[int, typer.Option(min=1, help="GETs in flight per round")] = 32,
    timeout: Annotated[
        float, typer.Option(callback=_timeout, help="Seconds an order may take to end")
    ] = 60.0,
    seed: Annotated[int | None, typer.Option(help="Random seed of the order lines")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Summary as the last line")] = False,
    plot: Annotated[Path | None, typer.Option(help="PNG of latency over time")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
    log_level: Annotated[
        str, typer.Option(callback=_level, help="Embedded platform's log level")
    ] = "WARNING",
    cprofile: Annotated[
        Path | None,
        typer.Option(help="cProfile the embedded platform (a file per service process)"),
    ] = None,
    processes: Annotated[
        bool,
        typer.Option(
            "--processes/--single-process",
            help="Embedded platform: a process per service, or all four in one",
        ),
    ] = processes_pay_off(),
    stock: Annotated[
        int | None,
        typer.Option(min=0, help="Embedded: units of every product at the start"),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="The platform's broker: see each end on order-events, not by polling"),
    ] = None,
    poll: Annotated[
        bool, typer.Option(help="See each end by polling over HTTP even where the broker is known")
    ] = False,
) -> None:
    """Place orders and wait for each to be CONFIRMED or CANCELLED; report the latencies."""
    if ctx.invoked_subcommand is not None:
        return
    if rate is not None and not 0 < rate < math.inf:  # NaN, too; infinity is no JSON
        raise fail("--rate must be positive and finite")
    if rate is not None and concurrency is not None:
        raise fail("--concurrency is for the closed loop, --rate for the open one: give one")
    if stock is not None and not embedded:
        raise fail("--stock needs --embedded (it rewrites the platform's stock)")
    if kafka is not None and embedded:
        raise fail("--kafka is for a running platform (--embedded knows its broker)")
    if order_url is not None and embedded:  # it was ignored: the run loaded another platform
        raise fail("--order-url is for a running platform (--embedded starts its own)")
    order_url = order_url or DEFAULT_ORDER_URL
    _check_inputs(order_url, plot)

    async def main() -> tuple[dict[str, Any], LoadResult]:
        from commerce_apps.bench.embedded import embedded_platform

        in_flight = CLOSED_LOOP if concurrency is None else concurrency
        config = LoadConfig(
            order_url, orders, in_flight, rate, poll_interval, poll_parallel, timeout, seed
        )
        if not embedded:
            quiet_logs()  # the libraries' warnings would repeat the one line an error gets
            watched = None if poll or kafka is None else _kafka(kafka)
            await check_reachable(order_url)
            if watched is not None:
                await on_broker(watched.bootstrap_servers, _broker_answers(watched))
            result = await _drive(replace(config, kafka=watched), quiet)
        else:
            async with embedded_platform(log_level, cprofile, processes=processes, stock=stock) as (
                url,
                bootstrap,
            ):
                broker = None if poll else _kafka(bootstrap)
                result = await _drive(replace(config, order_url=url, kafka=broker), quiet)
        mode = {"rate_per_s": rate} if rate is not None else {"concurrency": in_flight}
        setup = {"embedded": embedded, **({"processes": processes} if embedded else {})}
        return result.summary(**mode, **setup), result

    summary, result = run_async(main)
    _emit("commerce bench", summary, as_json)
    if plot is not None:
        _save_plot(plot, result, summary)


@bench_app.command("relay")
def relay_command(
    events: Annotated[int, typer.Option(min=1, help="Outbox rows to relay")] = 20_000,
    profile: Annotated[str, typer.Option(help="default | seed")] = "default",
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="Rows per poll (default profile). 2000: the batch of every relay figure in "
            "docs/benchmarks.md, where the size barely mattered; the services use "
            "OUTBOX_BATCH_SIZE (500)",
        ),
    ] = 2000,
    database_url: Annotated[str | None, typer.Option(help="PostgreSQL server")] = None,
    kafka: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Summary as the last line")] = False,
) -> None:
    """Outbox relay throughput: committed rows to broker acknowledgements."""
    if profile not in ("default", "seed"):
        raise fail("--profile is default or seed")
    if database_url is not None:
        postgres_url(database_url, "--database-url")
    config = RelayBenchConfig(
        events=events,
        profile="seed" if profile == "seed" else "default",
        batch_size=batch_size,
        database_url=database_url,
        kafka=kafka,
    )
    with err.status(f"relaying {events} events ({profile})", spinner="dots"):
        summary = run_async(lambda: run_relay_bench(config))
    _emit("commerce bench relay", summary, as_json)


__all__ = ["bench_app"]

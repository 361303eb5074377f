"""``commerce dlt list|replay``: show dead letters with their reasons, send them back."""

from __future__ import annotations

from typing import Annotated

import typer
from adapters_kafka.dead_letters import read_dead_letters, replay
from adapters_kafka.publisher import KafkaPublisher
from rich.console import Console
from rich.table import Table

from commerce_apps.console import fail, load_settings, quiet_logs, run_async
from commerce_apps.container import kafka_settings
from commerce_apps.platform import on_broker

dlt_app = typer.Typer(no_args_is_help=True, help="Inspect and replay dead letters.")


@dlt_app.command("list")
def list_letters(topic: Annotated[str, typer.Argument(help="e.g. order-events")]) -> None:
    """Every record on ``<topic>.DLT``, with the error that put it there."""
    kafka = kafka_settings(load_settings(), "dlt")
    quiet_logs()

    async def main() -> None:
        letters = await on_broker(kafka.bootstrap_servers, read_dead_letters(kafka, topic))
        table = Table(title=f"{len(letters)} dead letter(s) of {topic}", title_justify="left")
        for column in ("dlt offset", "from", "event id", "event type", "attempts", "error"):
            table.add_column(column, overflow="fold")
        for letter in letters:
            table.add_row(
                f"{letter.partition}@{letter.offset}",
                f"{letter.original_topic} {letter.origin}",
                letter.event_id,
                letter.event_type,
                letter.attempts,
                letter.error,
            )
        Console().print(table)

    run_async(main)


@dlt_app.command("replay")
def replay_letters(
    topic: Annotated[str, typer.Argument(help="e.g. order-events")],
    event_id: Annotated[str | None, typer.Option(help="Only this event")] = None,
) -> None:
    """Publish dead letters again to their original topic (the inbox makes repeats safe)."""
    kafka = kafka_settings(load_settings(), "dlt")
    quiet_logs()

    async def main() -> None:
        letters = await on_broker(kafka.bootstrap_servers, read_dead_letters(kafka, topic))
        if event_id is not None:
            letters = [letter for letter in letters if letter.event_id == event_id]
            if not letters:
                raise fail(f"no dead letter with event id {event_id} on {topic}.DLT")
        async with KafkaPublisher(kafka) as publisher:
            count = await on_broker(kafka.bootstrap_servers, replay(letters, publisher))
        Console().print(f"replayed {count} record(s) to their original topic")

    run_async(main)

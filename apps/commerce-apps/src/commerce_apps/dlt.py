"""``commerce dlt list|replay``: show dead letters with their reasons, send them back."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from adapters_kafka.dead_letters import (
    DeadLetter,
    NoSuchTopic,
    dlt_name,
    read_dead_letters,
    replay,
    to_replay,
)
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from aiokafka.errors import KafkaError
from core_saga.messages import SAGA_TOPICS
from core_saga.ports import PublishError
from rich.console import Console
from rich.table import Table

from commerce_apps.broker_errors import first_line
from commerce_apps.console import fail, load_settings, quiet_logs, run_async
from commerce_apps.container import kafka_settings
from commerce_apps.platform import PlatformError, on_broker

dlt_app = typer.Typer(no_args_is_help=True, help="Inspect and replay dead letters.")
TOPIC_HELP = "e.g. order-events, or its dead-letter topic order-events.DLT"
SEND_SECONDS = 30.0
"""The longest the broker may leave a read of the DLT without records, or one replayed
record without its acknowledgement: not a limit on the whole read or replay, which a
large DLT on a slow but healthy broker could pass."""


async def _dead_letters(kafka: KafkaSettings, topic: str) -> list[DeadLetter]:
    """Every letter on ``topic``'s DLT; a DLT the broker lacks is an error, not "0 letters".

    The platform creates each saga topic's DLT with the topic (``commerce topics``, or a
    service's start), so a missing one means a typo, the wrong broker or ``KAFKA_NAMESPACE``,
    or a platform never started there: an operator looking for dead letters wants to know.
    """

    async def read() -> list[DeadLetter]:
        try:
            return await read_dead_letters(
                kafka, topic, missing_ok=False, stall_seconds=SEND_SECONDS
            )
        except NoSuchTopic as missing:
            raise PlatformError(
                f"no topic {missing} on the broker at {kafka.bootstrap_servers} "
                f"(the saga's: {', '.join(SAGA_TOPICS)})"
            ) from None

    return await on_broker(kafka.bootstrap_servers, read(), seconds=None)  # read's own limit


async def _started(publisher: KafkaPublisher) -> KafkaPublisher:
    await publisher.start()
    return publisher


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no acknowledgement in {SEND_SECONDS:g} s"
    return first_line(exc)


@dlt_app.command("list")
def list_letters(topic: Annotated[str, typer.Argument(help=TOPIC_HELP)]) -> None:
    """Every dead letter of a topic (on <topic>.DLT), with the error that put it there."""
    kafka = kafka_settings(load_settings(), "dlt")
    quiet_logs()

    async def main() -> None:
        letters = await _dead_letters(kafka, topic)
        title = f"{len(letters)} dead letter(s) on {dlt_name(topic)}"
        table = Table(title=title, title_justify="left")
        columns = ("dlt offset", "from", "group", "event id", "event type", "attempts", "error")
        for column in columns:
            table.add_column(column, overflow="fold")
        for letter in letters:
            table.add_row(
                f"{letter.partition}@{letter.offset}",
                f"{letter.original_topic} {letter.origin}",
                letter.group,
                letter.event_id,
                letter.event_type,
                letter.attempts,
                letter.error,
            )
        Console().print(table)

    run_async(main)


@dlt_app.command("replay")
def replay_letters(
    topic: Annotated[str, typer.Argument(help=TOPIC_HELP)],
    event_id: Annotated[str | None, typer.Option(help="Only this event")] = None,
) -> None:
    """Publish dead letters again to their original topic (the inbox makes repeats safe)."""
    kafka = kafka_settings(load_settings(), "dlt")
    quiet_logs()

    async def main() -> None:
        letters = await _dead_letters(kafka, topic)
        if event_id is not None:
            letters = [letter for letter in letters if letter.event_id == event_id]
            if not letters:
                raise fail(f"no dead letter with event id {event_id} on {dlt_name(topic)}")
        total, done = len(to_replay(letters)), list[DeadLetter]()
        publisher = await on_broker(kafka.bootstrap_servers, _started(KafkaPublisher(kafka)))
        try:
            async with publisher:
                await replay(letters, publisher, each_within=SEND_SECONDS, on_sent=done.append)
        # "At least": a send given up on may still land when the publisher flushes on exit.
        except asyncio.CancelledError:  # Ctrl-C: what was sent stays sent
            done_of = f"at least {len(done)} of {total} record(s)"
            Console(stderr=True).print(f"interrupted: replayed {done_of}")
            raise typer.Exit(130) from None
        except (PublishError, KafkaError, OSError, TimeoutError) as exc:
            reason = _reason(exc)
            raise PlatformError(
                f"replayed at least {len(done)} of {total} record(s), then the broker at "
                f"{kafka.bootstrap_servers} failed: {reason}; replaying again is safe"
            ) from None
        Console().print(f"replayed {total} record(s) to their original topic")

    run_async(main)

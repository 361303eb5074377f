"""``commerce outbox resend``: send again what the outboxes keep, after a broker lost it.

For a broker that lost events before every consumer read them (a cluster restored from an
older state, a topic deleted): the published rows, or those published since a moment, are
marked unpublished and the running relays send them again within a second (their fallback
poll). The consumers' inboxes skip what they had applied. Only what an outbox still keeps
(``OUTBOX_RETENTION_HOURS``) can be sent again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from commerce_apps.console import database_targets, fail, quiet_logs, run_async
from commerce_apps.platform import on_database, reach_database

outbox_app = typer.Typer(no_args_is_help=True, help="Work on the services' outboxes.")


@outbox_app.command("resend")
def resend(
    service: Annotated[str | None, typer.Argument(help="one service, on DATABASE_URL")] = None,
    since: Annotated[
        str | None,
        typer.Option(help="only events published at or after this ISO 8601 time (UTC if naive)"),
    ] = None,
    server_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="COMMERCE_DATABASE_URL",
            help="without a service: the server holding the four services' databases",
        ),
    ] = None,
) -> None:
    """Have the relays send again what the outboxes keep (the inboxes skip repeats)."""
    from adapters_postgres.outbox import requeue_published

    moment = _instant(since) if since is not None else None
    targets = database_targets(service, server_url)
    quiet_logs()

    async def main() -> None:
        for name, url in targets.items():
            await reach_database(f"{name} database", url)
            count = await on_database(f"{name} resend", requeue_published(url, moment))
            Console().print(f"{name}: {count} event(s) to send again")

    run_async(main)


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--since is not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

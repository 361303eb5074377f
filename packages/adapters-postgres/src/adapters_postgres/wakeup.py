"""Waking the outbox relay after a commit, without a NOTIFY inside the business transaction.

A ``pg_notify`` in a transaction makes its commit take the server's one lock for queuing
notifications, held through the commit's WAL flush: every notifying commit of every
database on the server then commits one after another (pgbench, 16 clients: 7,000–8,500
insert+commit tps without, 2,400–2,600 with; ``pg_notify`` as a statement of its own after
the commit 5,800; 2,000 ``place_order`` calls 16 at a time: ``Lock:object`` 77–80% of the
order database's active-backend samples before, 0% after, with about 100 NOTIFYs). So a
unit of work commits its outbox rows without one, and then tells ``OUTBOX_WAKEUP.written``:

- a relay of this process leading the same database and channel (``RelayRunner`` registers
  itself while it leads) is woken in-process: its ``wake`` event is set, no NOTIFY at all;
- otherwise ``SELECT pg_notify(channel, '')`` goes out on a connection of the unit of work's
  engine, in autocommit mode, coalesced: at most one in flight per database and channel,
  and whatever arrives meanwhile causes exactly one more afterwards. A relay of another
  process (a replica) hears it through its ``LISTEN``.

A lost wake-up costs latency, not rows: the relay's fallback poll (``OUTBOX_POLL_INTERVAL``)
finds what is waiting, as for a NOTIFY missed while reconnecting. So a failed NOTIFY is
logged (WARNING) and dropped.

Keys name the database (host, port, database name) and the channel: one process may hold
many databases of the same service (the tests do), and only the one relay reading a
database may be woken for its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters_postgres import raw

log = logging.getLogger(__name__)

WakeupKey = tuple[str, int, str, str]
"""Host (or socket directory), port, database, channel."""

NOTIFY_TIMEOUT: Final = 5.0
"""Seconds a NOTIFY may take; past that it counts as lost (the fallback poll covers it)."""

_NOTIFY = "SELECT pg_notify($1, '')"


def wakeup_key(url: URL | str, channel: str) -> WakeupKey:
    """The key of ``channel`` on the database at ``url``: the same for an engine's URL and
    for the URL string a relay was given (a socket directory in ``?host=`` counts as the
    host, a missing port as 5432)."""
    parsed = make_url(url) if isinstance(url, str) else url
    host = parsed.host or _first(parsed.query.get("host")) or ""
    port = parsed.port or int(_first(parsed.query.get("port")) or 5432)
    return (host.lower(), port, parsed.database or "", channel)


def _first(value: str | tuple[str, ...] | None) -> str | None:
    if isinstance(value, tuple):
        return value[0] if value else None
    return value


class OutboxWakeup:
    """Per process: who leads which database's relay here, and the NOTIFYs in flight."""

    def __init__(self) -> None:
        # A relay's wake event and its loop: a commit wakes only a relay on its own loop (one
        # of a loop that ended, as the tests leave, leads nothing here any more).
        self._leaders: dict[WakeupKey, list[tuple[asyncio.Event, asyncio.AbstractEventLoop]]] = {}
        self._sending: dict[WakeupKey, asyncio.Task[None]] = {}
        self._again: set[WakeupKey] = set()
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done (not collected)

    def lead(self, key: WakeupKey, wake: asyncio.Event) -> Callable[[], None]:
        """Wake ``wake`` for commits of this process on ``key`` until the returned function
        is called (the relay calls it when it stops leading)."""
        leader = (wake, asyncio.get_running_loop())
        self._leaders.setdefault(key, []).append(leader)

        def unregister() -> None:
            leaders = self._leaders.get(key, [])
            with contextlib.suppress(ValueError):
                leaders.remove(leader)
            if not leaders:
                self._leaders.pop(key, None)

        return unregister

    def leading(self, key: WakeupKey) -> bool:
        return bool(self._leaders.get(key))

    def written(self, engine: AsyncEngine, channel: str) -> None:
        """Outbox rows for ``channel`` committed on ``engine``'s database: wake its relay.

        Never raises and never waits: an in-process leader is woken at once, a NOTIFY is
        sent by a task of its own (or folded into the one in flight).
        """
        try:
            key = wakeup_key(engine.url, channel)
            if self._wake_leaders(key):
                return
            loop = asyncio.get_running_loop()
            sending = self._sending.get(key)
            if sending is not None and not sending.done() and sending.get_loop() is loop:
                self._again.add(key)
                return
            self._again.discard(key)
            task = loop.create_task(self._send(key, engine, channel))
        except Exception as exc:  # a wake-up is never worth failing a committed request
            log.warning("outbox wake-up for %s not sent: %s", channel, exc)
            return
        self._sending[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wake_leaders(self, key: WakeupKey) -> bool:
        loop = asyncio.get_running_loop()
        here = [wake for wake, on in self._leaders.get(key, ()) if on is loop]
        for wake in here:
            wake.set()
        return bool(here)

    async def _send(self, key: WakeupKey, engine: AsyncEngine, channel: str) -> None:
        try:
            while True:
                try:
                    await _notify(engine, channel)
                except Exception as exc:
                    log.warning("outbox NOTIFY %s failed (the relay polls): %s", channel, exc)
                if key not in self._again:
                    return
                self._again.discard(key)
                if self._wake_leaders(key):  # a relay here took the lead meanwhile
                    return
        finally:
            if self._sending.get(key) is asyncio.current_task():
                del self._sending[key]

    async def settled(self) -> None:
        """Until the NOTIFYs in flight (and those they caused) are sent or given up."""
        while pending := [t for t in self._tasks if t.get_loop() is asyncio.get_running_loop()]:
            await asyncio.gather(*pending, return_exceptions=True)


async def _notify(engine: AsyncEngine, channel: str) -> None:
    """``pg_notify`` as a statement of its own (no transaction) on a pooled connection."""
    async with engine.connect() as conn:
        try:
            async with asyncio.timeout(NOTIFY_TIMEOUT):
                await raw.fetch(conn, _NOTIFY, channel, begin=False)
        except BaseException:  # a cancelled or timed-out query leaves the protocol mid-way
            with contextlib.suppress(Exception):
                await conn.invalidate()
            raise


OUTBOX_WAKEUP: Final = OutboxWakeup()
"""The process's one ``OutboxWakeup``: units of work tell it, relays register with it."""

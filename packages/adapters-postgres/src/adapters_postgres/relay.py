"""The outbox relay process: one leader per database, woken after commits, backing off on failure.

Leadership is a session-level advisory lock held on the relay's own connection. A standby
tries for it (``pg_try_advisory_lock``) every ``standby_poll`` seconds; when the leader's
connection dies (crash, ``pg_terminate_backend``, network) PostgreSQL drops the lock and a
standby gets it at its next try. It does not block in ``pg_advisory_lock``: a statement
waiting holds a snapshot, for as long as the leader lives, which would stop VACUUM from
clearing this database's dead rows (the outbox's above all) and make every
``CREATE INDEX CONCURRENTLY`` in it (a migration) wait for ever.

The leader reads and marks the outbox on that same connection, so a relay that lost its
lock cannot mark rows any more (the worst case is a batch published twice, which the
consumers' inbox absorbs).

While leading it is woken by commits of its own process directly (it registers with
``wakeup.OUTBOX_WAKEUP``), and by those of other processes through ``LISTEN``: they send a
NOTIFY after committing, never inside the business transaction.

The leader also deletes published rows past the retention, in a task beside the publishing
loop and on a connection of its own: run inline on the leader's connection the deletes
paused publishing, and with it every saga in flight (0.9 s per 222k rows). It needs no lock:
it only deletes rows already published, and a former leader that has not yet noticed its loss
only shares that work (``housekeeping.delete_oldest`` skips locked rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from core_saga.ports import Clock, EventPublisher, OutboxStore
from core_saga.relay import RelayBackoff, relay_batches
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool

from adapters_postgres.engine import (
    KEEPALIVES,
    create_engine,
    named_lock_key,
    poll_advisory_lock,
)
from adapters_postgres.outbox import PostgresOutboxStore, outbox_channel
from adapters_postgres.wakeup import OUTBOX_WAKEUP, wakeup_key

log = logging.getLogger(__name__)

DATABASE_ERRORS = (DBAPIError, OSError)
# The claim must walk the partial index in id order and stop at the batch size. With stale
# statistics (a backlog built up faster than autovacuum analyses, e.g. during a broker
# outage) the planner bitmap-scans the whole backlog and sorts it instead: measured at 20,000
# waiting rows, 70 ms per claim against 4.5 ms. The relay's session never needs either plan.
PLANNER = {"enable_bitmapscan": "off", "enable_sort": "off"}

RelayStep = Callable[[OutboxStore, EventPublisher, Clock, int], Awaitable[int]]
CLEANUP_STOP_SECONDS = 5.0  # a cancelled cleanup's wait for its statement to end


def relay_lock_key(service: str) -> int:
    """The advisory lock key of ``service``'s relay (signed 64 bits, stable across versions)."""
    return named_lock_key(f"outbox-relay:{service}")


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 100
    poll_interval: float = 1.0  # fallback for a missed NOTIFY (e.g. while reconnecting)
    backoff: RelayBackoff = field(default_factory=RelayBackoff)
    retention: timedelta = timedelta(days=1)
    cleanup_interval: float = 300.0
    standby_poll: float = 0.5  # how often a standby tries for the lock: the takeover delay

    def __post_init__(self) -> None:
        if self.cleanup_interval <= 0:  # the cleanup is a loop of its own: 0 would spin
            raise ValueError(f"cleanup_interval must be positive, not {self.cleanup_interval}")


class LostLeadership(Exception):
    """The leader's connection closed; its lock is gone."""


class RelayRunner:
    """Runs the relay for one service database until cancelled.

    ``leading`` is set while this runner holds the lock; ``idle`` while it leads and waits
    with nothing left to send (tests and graceful shutdown wait on it).
    """

    def __init__(
        self,
        url: str,
        service: str,
        publisher: EventPublisher,
        clock: Clock,
        settings: RelaySettings | None = None,
        step: RelayStep = relay_batches,
    ) -> None:
        self.service = service
        self.settings = settings or RelaySettings()
        self.leading = asyncio.Event()
        self.idle = asyncio.Event()
        self.backend_pid: int | None = None
        self.published = 0
        self.failures = 0  # publish attempts failed in a row (0 while the broker is fine)
        self._reconnects = 0  # sessions ended since a send pass went through
        session = {name: str(value) for name, value in {**KEEPALIVES, **PLANNER}.items()}
        self._engine = create_engine(  # NullPool: the lock dies with the socket
            url,
            poolclass=NullPool,
            connect_args={"server_settings": session},
            application_name=f"commerce-{service}-relay",
        )
        self._publisher = publisher
        self._clock = clock
        self._step = step
        self._channel = outbox_channel(service)
        self._lock_key = relay_lock_key(service)
        self._wakeup_key = wakeup_key(self._engine.url, self._channel)

    async def run(self) -> None:
        """Stand by, lead, and after losing the connection stand by again; cancel to stop."""
        self._reconnects = 0
        try:
            while True:
                try:
                    await self._session()
                except (*DATABASE_ERRORS, LostLeadership) as exc:
                    log.warning("outbox relay %s lost its database: %s", self.service, exc)
                except Exception:  # e.g. asyncpg's own errors from LISTEN: never stop relaying
                    log.exception("outbox relay %s failed; starting over", self.service)
                # Not reset by taking the lock: an error that recurs once leading (a bug, not
                # an outage) backs off as an outage does.
                self._reconnects += 1
                await asyncio.sleep(self.settings.backoff.delay(self._reconnects))
        finally:
            await self._engine.dispose()

    async def _session(self) -> None:
        unregister: Callable[[], None] | None = None
        cleanup: asyncio.Task[None] | None = None
        conn = await self._engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            raw = (await conn.get_raw_connection()).driver_connection  # asyncpg.Connection
            if raw is None:
                raise LostLeadership("no driver connection")
            self.backend_pid = raw.get_server_pid()
            await poll_advisory_lock(conn, self._lock_key, self.settings.standby_poll)
            wake, lost = asyncio.Event(), asyncio.Event()
            raw.add_termination_listener(lambda *_: lost.set())
            await raw.add_listener(self._channel, lambda *_: wake.set())  # other processes
            unregister = OUTBOX_WAKEUP.lead(self._wakeup_key, wake)  # commits of this one
            log.info("outbox relay %s is the leader (backend %s)", self.service, self.backend_pid)
            self.leading.set()
            cleanup = asyncio.create_task(self._clean_up(), name=f"outbox-cleanup-{self.service}")
            await self._lead(conn, wake, lost)
        finally:
            if cleanup is not None:
                cleanup.cancel()  # first: no delete starts once leadership ended
            if unregister is not None:
                unregister()
            self.leading.clear()
            self.idle.clear()
            self.backend_pid = None
            with contextlib.suppress(Exception):
                await conn.invalidate()  # close the socket: releases lock and LISTEN at once
            if cleanup is not None:  # never raises: the session's own error goes on
                _, pending = await asyncio.wait([cleanup], timeout=CLEANUP_STOP_SECONDS)
                if pending:  # its socket hangs (a partition): stand by without waiting more
                    log.warning("outbox relay %s: the cleanup did not stop in time", self.service)

    async def _lead(self, conn: AsyncConnection, wake: asyncio.Event, lost: asyncio.Event) -> None:
        store = PostgresOutboxStore(conn)
        while True:
            if lost.is_set():
                raise LostLeadership(f"backend {self.backend_pid} closed")
            wake.clear()
            try:
                sent = await self._step(
                    store, self._publisher, self._clock, self.settings.batch_size
                )
            except DATABASE_ERRORS:
                raise
            except Exception as exc:  # the broker: keep the lock, retry the same rows later
                self.failures += 1
                delay = self.settings.backoff.delay(self.failures)
                log.warning(
                    "outbox relay %s: publishing failed (%s); retry in %.1fs",
                    self.service,
                    exc,
                    delay,
                )
                await _first_of(lost, seconds=delay)
                continue
            self.failures = 0
            self.published += sent
            self._reconnects = 0  # a send pass went through: the session works
            if sent >= self.settings.batch_size:
                continue  # more is probably waiting
            self.idle.set()
            await _first_of(wake, lost, seconds=self.settings.poll_interval)
            self.idle.clear()

    async def _clean_up(self) -> None:
        """Delete rows published before the retention now and every ``cleanup_interval``.

        Each pass on a connection of its own (closed after it: NullPool). A failure, e.g.
        that connection dropped, is logged and tried again at the next interval: it is no
        reason to stop publishing or to hand over leadership.
        """
        interval = self.settings.cleanup_interval
        while True:
            cutoff = self._clock.now() - self.settings.retention
            try:
                async with self._engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    deleted = await PostgresOutboxStore(conn).delete_published_before(cutoff)
            except DATABASE_ERRORS as exc:
                log.warning(
                    "outbox relay %s: cleanup failed (%s); retry in %gs",
                    self.service,
                    exc,
                    interval,
                )
            except Exception:  # a bug: the traceback too, and the same retry
                log.exception(
                    "outbox relay %s: cleanup failed; retry in %gs", self.service, interval
                )
            else:
                if deleted:
                    log.info("outbox relay %s deleted %d published rows", self.service, deleted)
            await asyncio.sleep(interval)


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Return when any event is set or ``seconds`` passed."""
    waiters: list[asyncio.Task[Any]] = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

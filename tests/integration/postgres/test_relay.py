"""The relay: id order, one leader per database, hand-over, wake-up, backoff, retention (a
cleanup beside the publishing, only while leading)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from adapters_postgres.housekeeping import delete_in_batches
from adapters_postgres.outbox import PostgresOutboxStore
from adapters_postgres.relay import RelayRunner, RelaySettings
from adapters_postgres.uow import order_uow_factory
from core_saga.messages import Envelope
from core_saga.relay import RelayBackoff
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.integration.postgres.conftest import ManualClock, RecordingPublisher, order_created

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("empty_outbox")]

FAST = RelaySettings(
    batch_size=3, poll_interval=3600.0, backoff=RelayBackoff(initial=0.01, maximum=0.05)
)
RETAIN = replace(FAST, retention=timedelta(hours=1))  # first cleanup at once, the next in 300 s
CLEANUP = "adapters_postgres.outbox.delete_in_batches"  # what the outbox store's cleanup runs


@pytest.fixture
def order_url(service_databases: dict[str, str]) -> str:
    return service_databases["order"]


@asynccontextmanager
async def running(*runners: RelayRunner) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def write(engine: AsyncEngine, count: int, clock: ManualClock) -> list[Envelope]:
    """``count`` events, each in its own committed transaction."""
    written = []
    for _ in range(count):
        envelope = order_created(at=clock.now())
        async with order_uow_factory(engine)() as uow:
            await uow.outbox.add(envelope)
            await uow.commit()
        written.append(envelope)
    return written


async def published_long_ago(engine: AsyncEngine, count: int, clock: ManualClock) -> None:
    """``count`` events published two hours ago: past ``RETAIN``'s retention."""
    await write(engine, count, clock)
    store = PostgresOutboxStore(engine)
    batch = await store.claim_batch(count)
    await store.mark_published([each.position for each in batch], clock.now() - timedelta(hours=2))


async def outbox_ids(engine: AsyncEngine) -> list[UUID]:
    async with engine.connect() as conn:
        return list(await conn.scalars(text("SELECT event_id FROM outbox ORDER BY id")))


async def until_outbox_holds(engine: AsyncEngine, envelopes: Sequence[Envelope]) -> None:
    """Until the outbox holds just ``envelopes`` (the cleanup deleted the rest)."""
    expected = [each.event_id for each in envelopes]
    async with asyncio.timeout(10):
        while await outbox_ids(engine) != expected:
            await asyncio.sleep(0.01)


async def first_leader(*runners: RelayRunner) -> RelayRunner:
    waits = {asyncio.create_task(r.leading.wait()): r for r in runners}
    done, pending = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "no relay became the leader"
    return waits[done.pop()]


async def test_relay_publishes_in_id_order_and_marks(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    written = await write(order_engine, 7, clock)
    runner = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(runner):
        await publisher.wait_for(7)
        await asyncio.wait_for(runner.idle.wait(), 10)
    assert publisher.event_ids == [e.event_id for e in written]
    assert publisher.attempts == 3  # batches of 3, 3, 1
    assert await PostgresOutboxStore(order_engine).claim_batch(10) == []


async def test_a_commit_wakes_the_waiting_relay(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    """The fallback poll is an hour away: only the wake-up after the commit can wake it (here
    in-process; ``test_wakeup`` covers the NOTIFY a process without the leader sends)."""
    runner = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(runner):
        await asyncio.wait_for(runner.idle.wait(), 10)
        [envelope] = await write(order_engine, 1, clock)
        await publisher.wait_for(1, within=5)
    assert publisher.event_ids == [envelope.event_id]


async def test_two_relays_publish_each_row_once_in_order(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    one = RelayRunner(order_url, "order", publisher, clock, FAST)
    two = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(one, two):
        leader = await first_leader(one, two)
        written = await write(order_engine, 20, clock)
        await publisher.wait_for(20)
        await asyncio.wait_for(leader.idle.wait(), 10)
        assert [r.leading.is_set() for r in (one, two)].count(True) == 1
    assert publisher.event_ids == [e.event_id for e in written]


async def test_the_standby_takes_over_when_the_leaders_connection_dies(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    # The killed leader's process lives on and would try again at once; a crashed one would
    # not come back, so here it comes back only after the standby had its chance.
    slow_return = replace(FAST, backoff=RelayBackoff(initial=5.0, maximum=5.0))
    leader = RelayRunner(order_url, "order", publisher, clock, slow_return)
    standby = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(leader):
        await first_leader(leader)
        async with running(standby):
            before = await write(order_engine, 2, clock)
            await publisher.wait_for(2)
            await asyncio.wait_for(leader.idle.wait(), 10)

            async with order_engine.connect() as conn:
                killed = await conn.scalar(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": leader.backend_pid}
                )
            assert killed
            await asyncio.wait_for(standby.leading.wait(), 10)

            after = await write(order_engine, 4, clock)
            await publisher.wait_for(6)
            await asyncio.wait_for(standby.idle.wait(), 10)
            async with asyncio.timeout(10):  # the old leader notices its loss on its own schedule
                while leader.leading.is_set():
                    await asyncio.sleep(0.01)
    assert publisher.event_ids == [e.event_id for e in before + after]
    assert standby.published == 4


async def test_a_standby_holds_back_neither_vacuum_nor_a_concurrent_index_build(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    """A standby waiting in ``pg_advisory_lock`` kept a snapshot for the leader's lifetime:
    ``CREATE INDEX CONCURRENTLY`` (a migration, on a service with two replicas) waited for
    it for ever, and VACUUM could not clear the outbox's dead rows."""
    one = RelayRunner(order_url, "order", publisher, clock, FAST)
    two = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(one, two):
        leader = await first_leader(one, two)
        standby = two if leader is one else one
        async with asyncio.timeout(10):
            while standby.backend_pid is None:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the standby tries (or waits) by now
        async with order_engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            horizon = text("SELECT backend_xmin FROM pg_stat_activity WHERE pid = :pid")
            for _ in range(3):  # what VACUUM must keep dead rows for (a try lasts < 1 ms)
                assert await conn.scalar(horizon, {"pid": standby.backend_pid}) is None
                await asyncio.sleep(0.1)
            async with asyncio.timeout(10):
                await conn.execute(text("CREATE INDEX CONCURRENTLY standby_probe ON outbox (key)"))
            await conn.execute(text("DROP INDEX CONCURRENTLY standby_probe"))
        assert not standby.leading.is_set()


async def test_publishing_failures_back_off_and_retry_the_same_rows(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    publisher.fail_next = 4
    written = await write(order_engine, 2, clock)
    runner = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(runner):
        await publisher.wait_for(2)
        await asyncio.wait_for(runner.idle.wait(), 10)
    assert publisher.attempts == 5
    assert runner.failures == 0
    assert publisher.event_ids == [e.event_id for e in written]


async def test_published_rows_are_deleted_after_the_retention_period(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    runner = RelayRunner(
        order_url, "order", publisher, clock, replace(RETAIN, cleanup_interval=0.05)
    )
    async with running(runner):
        await write(order_engine, 3, clock)
        await publisher.wait_for(3)
        await asyncio.wait_for(runner.idle.wait(), 10)  # marked at the old time
        clock.advance(2 * 3600)
        [recent] = await write(order_engine, 1, clock)
        await publisher.wait_for(4)
        await until_outbox_holds(order_engine, [recent])  # at a later interval


async def test_the_leader_publishes_while_its_cleanup_runs(
    order_engine: AsyncEngine,
    order_url: str,
    clock: ManualClock,
    publisher: RecordingPublisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run inline on the leader's connection, a cleanup of many rows held back every event
    until it ended. Here the cleanup lasts until the test lets it go: new rows go out
    meanwhile, and it deletes the old ones once let go."""
    await published_long_ago(order_engine, 3, clock)
    started, release = asyncio.Event(), asyncio.Event()
    cleaned_on: list[int] = []

    async def held(bind: AsyncConnection, *args: Any) -> int:
        cleaned_on.append(await bind.scalar(text("SELECT pg_backend_pid()")))
        started.set()
        await release.wait()
        return await delete_in_batches(bind, *args)

    monkeypatch.setattr(CLEANUP, held)
    runner = RelayRunner(order_url, "order", publisher, clock, RETAIN)
    async with running(runner):
        await asyncio.wait_for(started.wait(), 10)
        written = await write(order_engine, 4, clock)
        await publisher.wait_for(4)
        await asyncio.wait_for(runner.idle.wait(), 10)
        assert len(await outbox_ids(order_engine)) == 3 + 4  # the cleanup is still held
        assert cleaned_on[0] != runner.backend_pid  # on a connection of its own
        release.set()
        await until_outbox_holds(order_engine, written)
    assert publisher.event_ids == [e.event_id for e in written]


@pytest.mark.parametrize(
    ("failure", "level"), [("connection dropped", logging.WARNING), ("bug", logging.ERROR)]
)
async def test_a_failed_cleanup_is_logged_and_tried_again_while_publishing_goes_on(
    order_engine: AsyncEngine,
    order_url: str,
    clock: ManualClock,
    publisher: RecordingPublisher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: str,
    level: int,
) -> None:
    """The first two cleanups fail (their connection ended by the server, or a bug in the
    code): each is logged, the next interval tries again, and the leader keeps its session
    and publishes all along."""
    await published_long_ago(order_engine, 3, clock)
    tries = 0

    async def failing(bind: AsyncConnection, *args: Any) -> int:
        nonlocal tries
        tries += 1
        if tries <= 2 and failure == "bug":
            raise RuntimeError("a bug")
        if tries <= 2:
            await bind.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return await delete_in_batches(bind, *args)

    monkeypatch.setattr(CLEANUP, failing)
    caplog.set_level(logging.WARNING, logger="adapters_postgres.relay")
    runner = RelayRunner(
        order_url, "order", publisher, clock, replace(RETAIN, cleanup_interval=0.05)
    )
    async with running(runner):
        await asyncio.wait_for(runner.leading.wait(), 10)
        backend = runner.backend_pid
        first = await write(order_engine, 1, clock)
        await publisher.wait_for(1)
        async with asyncio.timeout(10):
            while tries < 3:
                await asyncio.sleep(0.01)
        second = await write(order_engine, 1, clock)
        await publisher.wait_for(2)
        await until_outbox_holds(order_engine, first + second)
        assert runner.backend_pid == backend  # the same session: leadership never ended
    assert publisher.event_ids == [e.event_id for e in first + second]
    logged = [r for r in caplog.records if "cleanup failed" in r.getMessage()]
    assert [r.levelno for r in logged] == [level, level]


async def test_only_the_leader_cleans_up_and_only_while_it_leads(
    order_engine: AsyncEngine,
    order_url: str,
    clock: ManualClock,
    publisher: RecordingPublisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each runner has a clock of its own, so the cutoff of a cleanup tells whose it is."""
    cutoffs: list[datetime] = []

    async def recording(bind: AsyncConnection, statement: Any, before: datetime, *args: Any) -> int:
        cutoffs.append(before)
        return await delete_in_batches(bind, statement, before, *args)

    monkeypatch.setattr(CLEANUP, recording)
    often = replace(RETAIN, cleanup_interval=0.05)
    slow_return = replace(often, backoff=RelayBackoff(initial=5.0, maximum=5.0))
    standby_clock = ManualClock(clock.now() + timedelta(days=1))
    leader = RelayRunner(order_url, "order", publisher, clock, slow_return)
    standby = RelayRunner(order_url, "order", publisher, standby_clock, often)
    leaders, standbys = (each.now() - RETAIN.retention for each in (clock, standby_clock))
    async with running(leader):
        await first_leader(leader)
        async with running(standby):
            async with asyncio.timeout(10):  # the standby is connected and tries for the lock
                while standby.backend_pid is None or cutoffs.count(leaders) < 15:
                    await asyncio.sleep(0.01)
            assert standbys not in cutoffs
            assert not standby.leading.is_set()

            async with order_engine.connect() as conn:
                await conn.execute(
                    text("SELECT pg_terminate_backend(:pid)"), {"pid": leader.backend_pid}
                )
            await asyncio.wait_for(standby.leading.wait(), 10)
            async with asyncio.timeout(10):
                while leader.leading.is_set():
                    await asyncio.sleep(0.01)
            by_the_old_leader = cutoffs.count(leaders)  # its cleanup ended with its lead
            async with asyncio.timeout(10):
                while cutoffs.count(standbys) < 5:  # the new leader's, from its start
                    await asyncio.sleep(0.01)
            assert cutoffs.count(leaders) == by_the_old_leader


async def test_a_connection_lost_while_subscribing_is_retried(
    order_engine: AsyncEngine,
    order_url: str,
    clock: ManualClock,
    publisher: RecordingPublisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server ends the relay's session between its lock and its LISTEN (asyncpg raises
    its own error there, not SQLAlchemy's): the relay connects again and publishes."""
    listen = asyncpg.Connection.add_listener
    killed: list[int] = []

    async def dying_listen(raw: asyncpg.Connection, *args: Any) -> None:
        if not killed:
            killed.append(raw.get_server_pid())
            async with order_engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed[0]})
        await listen(raw, *args)

    monkeypatch.setattr(asyncpg.Connection, "add_listener", dying_listen)
    written = await write(order_engine, 2, clock)
    runner = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(runner):
        await publisher.wait_for(2)
    assert killed, "the first session was not ended"
    assert publisher.event_ids == [e.event_id for e in written]


@dataclass(frozen=True)
class RecordingBackoff(RelayBackoff):
    """Tiny delays; remembers for which attempt each was asked."""

    asked: list[int] = field(default_factory=list)

    def delay(self, failures: int) -> float:
        self.asked.append(failures)
        return super().delay(failures)


async def test_an_error_that_recurs_after_taking_the_lock_still_backs_off(
    order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    """A bug in a leading session (here its claim, a statement the database refuses) ends
    every session the same way: the delays between sessions grow instead of restarting at
    the first one each time. (A failing cleanup ends no session: the test above.)"""

    async def broken(*args: object) -> int:
        raise ProgrammingError("SELECT …", None, Exception("a bug"))

    backoff = RecordingBackoff(initial=0.001, maximum=0.01)
    settings = replace(FAST, backoff=backoff)
    runner = RelayRunner(order_url, "order", publisher, clock, settings, step=broken)
    async with running(runner):
        async with asyncio.timeout(30):
            while len(backoff.asked) < 4:
                await asyncio.sleep(0.01)
    assert backoff.asked[:4] == [1, 2, 3, 4]


async def test_the_leaders_session_is_named_for_operators(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    """``pg_stat_activity`` tells the relay's session from the service's (runbook)."""
    runner = RelayRunner(order_url, "order", publisher, clock, FAST)
    async with running(runner):
        await asyncio.wait_for(runner.leading.wait(), 10)
        async with order_engine.connect() as conn:
            named = await conn.scalar(
                text("SELECT application_name FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": runner.backend_pid},
            )
    assert named == "commerce-order-relay"

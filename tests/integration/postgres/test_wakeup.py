"""Waking the relay after a commit: in-process when it leads here, else one coalesced NOTIFY,
and never a NOTIFY inside the business transaction (it serialised every notifying commit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from adapters_postgres.engine import create_engine, plain_url
from adapters_postgres.outbox import outbox_channel
from adapters_postgres.relay import RelayRunner, RelaySettings
from adapters_postgres.uow import order_uow_factory
from adapters_postgres.wakeup import OUTBOX_WAKEUP, wakeup_key
from core_saga.relay import RelayBackoff
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.postgres.conftest import ManualClock, RecordingPublisher, order_created

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("empty_outbox")]

CHANNEL = outbox_channel("order")
SETTINGS = RelaySettings(
    batch_size=100, poll_interval=3600.0, backoff=RelayBackoff(initial=0.01, maximum=0.05)
)


@pytest.fixture
def order_url(service_databases: dict[str, str]) -> str:
    return service_databases["order"]


class Listener:
    """A raw asyncpg connection LISTENing on the order channel: who notified, and when."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.heard: list[int] = []  # the notifying backends' pids

    def __call__(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.heard.append(pid)

    async def caught_up(self) -> None:
        """Everything committed so far delivered: the server sends a listener's pending
        notifications before it reports a statement done."""
        await OUTBOX_WAKEUP.settled()
        await self.conn.execute("SELECT 1")
        await asyncio.sleep(0.05)  # asyncpg calls listeners soon, not at once


@asynccontextmanager
async def listening(url: str) -> AsyncIterator[Listener]:
    conn = await asyncpg.connect(plain_url(url))
    listener = Listener(conn)
    try:
        await conn.add_listener(CHANNEL, listener)
        yield listener
    finally:
        await conn.close()


@asynccontextmanager
async def leading(runner: RelayRunner) -> AsyncIterator[None]:
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(runner.idle.wait(), 10)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def commit_one(engine: AsyncEngine, clock: ManualClock) -> None:
    async with order_uow_factory(engine)() as uow:
        await uow.outbox.add(order_created(at=clock.now()))
        await uow.commit()


def test_the_key_names_the_database_and_matches_an_engines_url() -> None:
    socket = "postgresql://postgres:@/test_order_a?host=/tmp/pg"
    engine = create_engine(socket)
    assert wakeup_key(engine.url, CHANNEL) == wakeup_key(socket, CHANNEL)
    assert wakeup_key(socket, CHANNEL) == ("/tmp/pg", 5432, "test_order_a", CHANNEL)
    assert wakeup_key(socket, CHANNEL) != wakeup_key(socket.replace("_a", "_b"), CHANNEL)
    tcp, same = (
        "postgresql://u:p@DB.example:5432/orders",
        "postgresql+asyncpg://u@db.example/orders",
    )
    assert wakeup_key(tcp, CHANNEL) == wakeup_key(same, CHANNEL)


async def test_a_commit_wakes_the_relay_leading_in_this_process_without_a_notify(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    """The fallback poll is an hour away; nothing is NOTIFYed: only the in-process wake-up
    can have woken it."""
    runner = RelayRunner(order_url, "order", publisher, clock, SETTINGS)
    async with listening(order_url) as listener, leading(runner):
        assert OUTBOX_WAKEUP.leading(wakeup_key(order_engine.url, CHANNEL))
        await commit_one(order_engine, clock)
        await publisher.wait_for(1, within=5)
        await listener.caught_up()
    assert listener.heard == []
    assert not OUTBOX_WAKEUP.leading(wakeup_key(order_engine.url, CHANNEL))  # unregistered


async def test_without_a_relay_here_a_notify_follows_the_commit(
    order_url: str, clock: ManualClock
) -> None:
    """A writer whose process leads no relay for its database NOTIFYs the replicas' relays,
    after its commit; the business transaction itself sends no ``pg_notify``."""
    writer = create_engine(order_url)
    sent: list[tuple[int, str]] = []  # (backend pid, statement) in the order the driver ran them
    uow_pids: list[int] = []
    logged: set[int] = set()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        raw = record.driver_connection
        if id(raw) not in logged:
            logged.add(id(raw))
            pid = raw.get_server_pid()
            raw.add_query_logger(lambda r: sent.append((pid, " ".join(r.query.split()))))

    sa_event.listen(writer.sync_engine, "checkout", checkout)
    try:
        assert not OUTBOX_WAKEUP.leading(wakeup_key(writer.url, CHANNEL))
        async with listening(order_url) as listener:
            async with order_uow_factory(writer)() as uow:
                await uow.outbox.add(order_created(at=clock.now()))
                raw = await uow.connection.get_raw_connection()
                uow_pids.append(raw.driver_connection.get_server_pid())
                await uow.outbox.flush()  # the rows written, the transaction still open
                assert raw.driver_connection.is_in_transaction()
                await uow.commit()
            await listener.caught_up()
            assert len(listener.heard) == 1
    finally:
        await OUTBOX_WAKEUP.settled()
        await writer.dispose()

    statements = [sql for _, sql in sent]
    notifies = [i for i, sql in enumerate(statements) if "pg_notify" in sql]
    assert len(notifies) == 1, statements
    [notify] = notifies
    assert statements[notify] == "SELECT pg_notify($1, '')"
    inserts = [i for i, (pid, sql) in enumerate(sent) if pid == uow_pids[0] and "outbox" in sql]
    assert inserts and all(i < notify for i in inserts)  # the rows' statement came first
    assert "pg_notify" not in " ".join(statements[i] for i in inserts)


async def test_a_burst_of_commits_sends_fewer_notifies_than_commits(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock
) -> None:
    """At most one NOTIFY in flight per database: the commits that arrive meanwhile share
    one more (a NOTIFY per commit, in the commit, was one lock hold each)."""
    count = 30  # a connection each from the module's engine (the server allows 100)
    async with listening(order_url) as listener:
        await asyncio.gather(*(commit_one(order_engine, clock) for _ in range(count)))
        await listener.caught_up()
    assert 1 <= len(listener.heard) < count


async def test_concurrent_commits_with_a_leader_here_are_all_published_without_a_notify(
    order_engine: AsyncEngine, order_url: str, clock: ManualClock, publisher: RecordingPublisher
) -> None:
    runner = RelayRunner(order_url, "order", publisher, clock, SETTINGS)
    async with listening(order_url) as listener, leading(runner):
        # 30 at once: the module's engine opens a connection for each (the server allows 100)
        await asyncio.gather(*(commit_one(order_engine, clock) for _ in range(30)))
        await publisher.wait_for(30, within=10)
        await listener.caught_up()
    assert len(set(publisher.event_ids)) == len(publisher.event_ids) == 30
    assert listener.heard == []

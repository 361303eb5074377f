"""``commerce bench relay``: outbox throughput from committed rows to broker acknowledgements.

It writes ``events`` real outbox rows (OrderCreated envelopes) into a fresh, migrated order
database, commits them, then runs the project's ``RelayRunner`` (``relay_batches`` on a
``PostgresOutboxStore`` bound to its leader connection) with a ``KafkaPublisher`` until every
row is marked published, which ``relay_batches`` does only after every ack came back.

Profiles, both on that same code path:

- ``default``: large batches, the batched publisher, claims and marks overlapping the sends.
- ``seed``: the seed's parameters: 100 rows per poll, one batch per poll (claim, send, mark,
  nothing overlapping), 500 ms between polls, and one message sent and awaited at a time.

Both use the same ``KafkaPublisher`` (``linger_ms=0``, as Java's producer defaults).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from adapters_kafka.topics import ensure_topics
from adapters_postgres.engine import create_databases, create_engine, drop_database, with_database
from adapters_postgres.migrations import migrate
from adapters_postgres.relay import RelayRunner, RelaySettings
from adapters_postgres.tables import outbox
from core_saga.clock import SystemClock
from core_saga.messages import ORDER_TOPIC, SAGA_TOPICS, Envelope, LineItem, OrderCreated
from core_saga.ports import Clock, EventPublisher, OutboundMessage, OutboxStore
from core_saga.relay import relay_batches
from sqlalchemy import func, select

from commerce_apps.platform import on_broker, on_database, reach_database, redacted

Profile = Literal["default", "seed"]
SEED_BATCH, SEED_PAUSE = 100, 0.5
INSERT_CHUNK = 2000


@dataclass(frozen=True)
class RelayBenchConfig:
    events: int = 20_000
    profile: Profile = "default"
    batch_size: int = 2000
    database_url: str | None = None  # a server on which a fresh database is created
    kafka: str | None = None
    partitions: int = 6
    timeout: float = 600.0


class OneByOne:
    """The seed's sending: each message on its own, waiting for its ack before the next."""

    def __init__(self, inner: EventPublisher) -> None:
        self._inner = inner

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        for message in messages:
            await self._inner.publish([message])


class Stopwatch:
    """Wraps ``relay_batches``: times the steps; the seed profile sends one batch a step and
    pauses after each."""

    def __init__(self, target: int, pause: float) -> None:
        self.target = target
        self.pause = pause
        self.sent = 0
        self.first: float | None = None
        self.last = 0.0
        self.done = asyncio.Event()

    async def step(
        self, store: OutboxStore, publisher: EventPublisher, clock: Clock, batch_size: int
    ) -> int:
        if self.first is None:
            self.first = time.perf_counter()
        one = 1 if self.pause else None
        sent = await relay_batches(store, publisher, clock, batch_size, max_batches=one)
        self.last = time.perf_counter()
        self.sent += sent
        if self.sent >= self.target:
            self.done.set()
        elif self.pause:
            await asyncio.sleep(self.pause)  # the seed's fixed delay between polls
        return sent

    @property
    def seconds(self) -> float:
        return self.last - (self.first or self.last)


def envelope_row(now: datetime) -> dict[str, Any]:
    order_id = uuid.uuid4()
    item = LineItem(product_id=uuid.uuid4(), quantity=2, unit_price=Decimal("12.50"))
    envelope = Envelope(
        event_id=uuid.uuid4(),
        occurred_at=now,
        correlation_id=order_id,
        payload=OrderCreated(
            order_id=order_id,
            customer_id=uuid.uuid4(),
            items=(item,),
            total_amount=Decimal("25.00"),
            currency="EUR",
        ),
    )
    return {
        "event_id": envelope.event_id,
        "topic": envelope.topic,
        "key": envelope.key,
        "event_type": envelope.event_type,
        "payload": envelope.to_dict(),
        "headers": {},
        "created_at": envelope.occurred_at,
    }


@contextlib.asynccontextmanager
async def infrastructure(config: RelayBenchConfig) -> AsyncIterator[tuple[str, str]]:
    """(database server admin URL, bootstrap servers): given, or embedded for the run."""
    async with contextlib.AsyncExitStack() as stack:
        admin, kafka = config.database_url, config.kafka
        if admin is None:
            from adapters_postgres.embedded import EmbeddedPostgres

            base = Path(tempfile.mkdtemp(prefix="commerce-bench-relay-"))
            stack.callback(shutil.rmtree, base, True)
            postgres = EmbeddedPostgres(base / "data", delete=True)
            await asyncio.to_thread(postgres.start)
            stack.push_async_callback(asyncio.to_thread, postgres.stop)
            admin = postgres.admin_url
        if kafka is None:
            from adapters_kafka.embedded import EmbeddedBroker

            broker = EmbeddedBroker()
            kafka = await asyncio.to_thread(broker.start)
            stack.push_async_callback(asyncio.to_thread, broker.stop)
        yield admin, kafka


async def fill_outbox(url: str, events: int) -> None:
    """``events`` outbox rows, committed ``INSERT_CHUNK`` per transaction."""
    engine = create_engine(url)
    try:
        now = datetime.now(UTC)
        for start in range(0, events, INSERT_CHUNK):
            rows = [envelope_row(now) for _ in range(min(INSERT_CHUNK, events - start))]
            async with engine.begin() as conn:
                await conn.execute(outbox.insert(), rows)
    finally:
        await engine.dispose()


async def outbox_counts(url: str) -> tuple[int, int]:
    """(published, unpublished) rows."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            published = await conn.scalar(
                select(func.count()).where(outbox.c.published_at.is_not(None))
            )
            waiting = await conn.scalar(select(func.count()).where(outbox.c.published_at.is_(None)))
    finally:
        await engine.dispose()
    return int(published or 0), int(waiting or 0)


async def reach(admin: str, kafka: KafkaSettings, partitions: int) -> None:
    """The broker (its topics made), then the server: either failing is one line, and
    before the scratch database exists, so nothing is left to drop."""
    topics = ensure_topics(kafka, SAGA_TOPICS, partitions=partitions)
    await on_broker(kafka.bootstrap_servers, topics)
    await reach_database(f"database server {redacted(admin)}", admin)


async def run_relay_bench(config: RelayBenchConfig) -> dict[str, Any]:
    """Set up, fill, drain; the summary (``events``, ``events_per_s`` first)."""
    seed = config.profile == "seed"
    batch = SEED_BATCH if seed else config.batch_size
    async with infrastructure(config) as (admin, bootstrap):
        kafka = KafkaSettings(bootstrap, client_id="commerce-bench")
        await reach(admin, kafka, config.partitions)
        name = f"bench_relay_{uuid.uuid4().hex[:10]}"
        shown = redacted(admin)
        await on_database(f"creating {name} on {shown}", create_databases(admin, [name]))
        try:
            url = with_database(admin, name)
            await on_database(f"migrating {name}", migrate(url, "order"))
            await fill_outbox(url, config.events)
            watch = Stopwatch(config.events, SEED_PAUSE if seed else 0.0)
            async with KafkaPublisher(kafka) as producer:
                publisher: EventPublisher = OneByOne(producer) if seed else producer
                settings = RelaySettings(
                    batch_size=batch, poll_interval=SEED_PAUSE if seed else 1.0
                )
                runner = RelayRunner(url, "order", publisher, SystemClock(), settings, watch.step)
                task = asyncio.create_task(runner.run(), name="bench-relay")
                try:
                    await asyncio.wait_for(watch.done.wait(), config.timeout)
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            published, waiting = await outbox_counts(url)
        finally:  # a failure here says what is left behind
            await on_database(f"dropping {name} on {shown}", drop_database(admin, name))
    seconds = watch.seconds
    return {
        "events": config.events,
        "events_per_s": round(config.events / seconds, 1) if seconds > 0 else 0.0,
        "profile": config.profile,
        "batch_size": batch,
        "seconds": round(seconds, 3),
        "published": published,
        "unpublished": waiting,
        "topic": ORDER_TOPIC,
    }

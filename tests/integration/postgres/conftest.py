"""Shared pieces for the Postgres integration tests: engines, a clock, a recording publisher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from adapters_postgres.engine import create_engine
from core_saga.messages import Envelope, LineItem, OrderCreated
from core_saga.ports import OutboundMessage, PublishError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


class ManualClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class RecordingPublisher:
    """Keeps what it was given; can be told to fail; wakes a waiter at a count."""

    def __init__(self) -> None:
        self.messages: list[OutboundMessage] = []
        self.failing = False
        self.fail_next = 0  # fail this many more attempts, then recover
        self.attempts = 0
        self._waiters: list[tuple[int, asyncio.Event]] = []

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        self.attempts += 1
        if self.failing or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise PublishError("broker down (test)")
        self.messages.extend(messages)
        for count, event in self._waiters:
            if len(self.messages) >= count:
                event.set()

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        """Until at least ``count`` messages arrived (a deadline, not a synchronising sleep)."""
        event = asyncio.Event()
        if len(self.messages) >= count:
            return
        self._waiters.append((count, event))
        await asyncio.wait_for(event.wait(), within)

    @property
    def event_ids(self) -> list[UUID]:
        return [message.event_id for message in self.messages]


def order_created(order_id: UUID | None = None, at: datetime | None = None) -> Envelope:
    order_id = order_id or uuid4()
    item = LineItem(product_id=uuid4(), quantity=2, unit_price=Decimal("12.50"))
    return Envelope(
        event_id=uuid4(),
        occurred_at=at or datetime(2026, 1, 1, tzinfo=UTC),
        correlation_id=order_id,
        payload=OrderCreated(
            order_id=order_id,
            customer_id=uuid4(),
            items=(item,),
            total_amount=item.unit_price * item.quantity,
            currency="EUR",
        ),
    )


async def wait_for_lock_waiters(engine: AsyncEngine, count: int, within: float = 10.0) -> None:
    """Until ``count`` backends of this database wait on a lock: observed, not slept on."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with asyncio.timeout(within), engine.connect() as conn:
        while True:
            waiting = await conn.scalar(query)
            await conn.rollback()  # a new transaction sees fresh statistics
            if waiting is not None and waiting >= count:
                return


@pytest.fixture
async def empty_outbox(order_engine: AsyncEngine) -> None:
    """The order database's outbox, emptied (for tests that count or relay its rows)."""
    async with order_engine.begin() as conn:
        await conn.execute(text("TRUNCATE outbox"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url, pool_size=10, max_overflow=60)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def order_engine(service_databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    async for engine in _engine(service_databases["order"]):
        yield engine


@pytest.fixture(scope="module")
async def inventory_engine(service_databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    async for engine in _engine(service_databases["inventory"]):
        yield engine


@pytest.fixture(scope="module")
async def payment_engine(service_databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    async for engine in _engine(service_databases["payment"]):
        yield engine


@pytest.fixture(scope="module")
async def notification_engine(service_databases: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    async for engine in _engine(service_databases["notification"]):
        yield engine


@pytest.fixture
async def own_engine(
    service_databases: dict[str, str],
) -> AsyncIterator[Callable[[str], AsyncEngine]]:
    """Engines of the test's own on a service's database: instrumenting one for tracing
    leaves the module's shared engines alone. Disposed after the test."""
    made: list[AsyncEngine] = []

    def make(service: str) -> AsyncEngine:
        made.append(create_engine(service_databases[service]))
        return made[-1]

    yield make
    for engine in made:
        await engine.dispose()

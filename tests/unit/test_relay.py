"""The relay step: claim in id order, publish, mark the batch; back off while the broker is down."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import uuid4

import pytest
from adapters_postgres.relay import RelaySettings
from core_saga.handlers.exactly_once import new_envelope
from core_saga.memory import ManualClock, MemoryOutboxStore, MemoryPublisher
from core_saga.messages import StockReleased
from core_saga.ports import OutboundMessage, PublishError
from core_saga.relay import RelayBackoff, relay_batches, relay_once

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def filled(clock: ManualClock, count: int) -> tuple[MemoryOutboxStore, list[OutboundMessage]]:
    store = MemoryOutboxStore()
    messages = [
        OutboundMessage.from_envelope(
            new_envelope(StockReleased(order_id=uuid4()), clock.now(), None)
        )
        for _ in range(count)
    ]
    store.append(messages, clock.now())
    return store, messages


async def test_relay_publishes_in_outbox_order_and_marks_the_batch(clock: ManualClock) -> None:
    store, messages = filled(clock, 5)
    publisher = MemoryPublisher()
    clock.advance(timedelta(seconds=2))
    assert await store.oldest_unpublished_age(clock.now()) == 2.0
    assert await relay_once(store, publisher, clock, batch_size=3) == 3
    assert await relay_once(store, publisher, clock, batch_size=3) == 2
    assert await relay_once(store, publisher, clock, batch_size=3) == 0
    assert publisher.published == messages
    assert all(row.published_at == clock.now() for row in store.rows)
    assert await store.oldest_unpublished_age(clock.now()) == 0.0


async def test_a_refused_batch_stays_unpublished_and_goes_out_once_later(
    clock: ManualClock,
) -> None:
    store, messages = filled(clock, 2)
    publisher = MemoryPublisher()
    publisher.down = True
    with pytest.raises(PublishError):
        await relay_once(store, publisher, clock)
    assert len(store.unpublished()) == 2
    publisher.down = False
    assert await relay_once(store, publisher, clock) == 2
    assert publisher.published == messages


class RefusesAfter(MemoryPublisher):
    """Accepts ``batches`` batches, then refuses every one."""

    def __init__(self, batches: int) -> None:
        super().__init__()
        self.left = batches
        self.calls = 0

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        self.calls += 1
        self.down = self.left <= 0
        self.left -= 1
        await super().publish(messages)


async def test_relay_batches_drains_the_outbox_in_order_and_marks_every_batch(
    clock: ManualClock,
) -> None:
    store, messages = filled(clock, 7)
    publisher = RefusesAfter(10)

    assert await relay_batches(store, publisher, clock, batch_size=3) == 7

    assert publisher.published == messages
    assert publisher.calls == 3  # 3 + 3 + 1: a short batch means drained
    assert store.unpublished() == []


async def test_relay_batches_stops_at_a_refused_batch_and_resumes_from_it(
    clock: ManualClock,
) -> None:
    store, messages = filled(clock, 7)
    publisher = RefusesAfter(1)

    with pytest.raises(PublishError):
        await relay_batches(store, publisher, clock, batch_size=3)

    # the first batch went out and is marked; the refused one and the rest wait, in order
    assert publisher.published == messages[:3]
    assert [row.message for row in store.unpublished()] == messages[3:]
    publisher.left = 10
    assert await relay_batches(store, publisher, clock, batch_size=3) == 4
    assert publisher.published == messages


async def test_relay_batches_sends_at_most_max_batches(clock: ManualClock) -> None:
    store, messages = filled(clock, 7)
    publisher = MemoryPublisher()

    assert await relay_batches(store, publisher, clock, batch_size=3, max_batches=2) == 6

    assert publisher.published == messages[:6]
    assert [row.message for row in store.unpublished()] == messages[6:]


async def test_published_rows_are_deleted_after_retention(clock: ManualClock) -> None:
    store, _ = filled(clock, 3)
    await relay_once(store, MemoryPublisher(), clock, batch_size=2)
    clock.advance(timedelta(hours=1))
    assert await store.delete_published_before(clock.now()) == 2
    assert len(store.rows) == 1


def test_backoff_doubles_up_to_the_maximum() -> None:
    backoff = RelayBackoff(initial=0.5, factor=2, maximum=5)
    assert [backoff.delay(n) for n in range(7)] == [0, 0.5, 1, 2, 4, 5, 5]
    assert backoff.delay(100_000) == 5


def test_a_cleanup_interval_of_zero_is_refused() -> None:
    """The cleanup runs in a loop of its own: 0 would reconnect and delete without pause."""
    with pytest.raises(ValueError, match="cleanup_interval must be positive"):
        RelaySettings(cleanup_interval=0)

"""The outbox relay step over ports, and its backoff schedule while the broker is down."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from core_saga.ports import (
    RECOVERY_BACKOFF_MAX,
    Clock,
    EventPublisher,
    OutboxStore,
    PendingMessage,
)


async def relay_batches(
    store: OutboxStore,
    publisher: EventPublisher,
    clock: Clock,
    batch_size: int = 500,
    max_batches: int | None = None,
) -> int:
    """Publish the outbox batch by batch, in id order, until it is drained; return rows sent.

    Each batch is marked published only after the publisher returned (every message
    acknowledged), and the next batch is sent only after that, so a failure leaves the
    refused batch and all later rows unpublished for the next call to send again: at least
    once, in outbox order. A ``PublishError`` propagates for the caller to back off.

    While a batch is out at the broker, the previous one is marked and the next one claimed
    (past the rows in flight), so the database and the broker work at the same time. It
    stops after a short batch, or after ``max_batches``.
    """
    sent, done = 0, 0
    batch = await store.claim_batch(batch_size)
    acked: Sequence[PendingMessage] = ()  # sent and acknowledged, not marked yet
    while batch:
        done += 1
        publishing = asyncio.ensure_future(publisher.publish([p.message for p in batch]))
        try:
            if acked:
                await store.mark_published([p.position for p in acked], clock.now())
            more = len(batch) >= batch_size and (max_batches is None or done < max_batches)
            following = (
                await store.claim_batch(batch_size, skip=[p.position for p in batch])
                if more
                else ()
            )
            await publishing
        finally:
            if not publishing.done():  # the database failed meanwhile
                publishing.cancel()
        sent += len(batch)
        acked, batch = batch, following
    if acked:
        await store.mark_published([p.position for p in acked], clock.now())
    return sent


async def relay_once(
    store: OutboxStore, publisher: EventPublisher, clock: Clock, batch_size: int = 500
) -> int:
    """Publish the oldest unpublished batch, then mark it published; return its size."""
    return await relay_batches(store, publisher, clock, batch_size, max_batches=1)


@dataclass(frozen=True)
class RelayBackoff:
    """Exponential delays between relay attempts while publishing fails (pure)."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = RECOVERY_BACKOFF_MAX

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failed attempts (0 after a success)."""
        if failures <= 0:
            return 0.0
        try:
            return min(self.maximum, self.initial * self.factor ** (failures - 1))
        except OverflowError:  # a long outage: the power left the float range
            return self.maximum

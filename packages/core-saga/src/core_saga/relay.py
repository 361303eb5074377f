"""The outbox relay step over ports, and its backoff schedule while the broker is down."""

from __future__ import annotations

from dataclasses import dataclass

from core_saga.ports import Clock, EventPublisher, OutboxStore


async def relay_once(
    store: OutboxStore, publisher: EventPublisher, clock: Clock, batch_size: int = 500
) -> int:
    """Publish the oldest unpublished batch, then mark it published; return its size.

    The batch is marked only after the publisher returned (every message acknowledged), so a
    failure leaves the rows unpublished and the next step sends them again: at least once,
    in outbox order. A ``PublishError`` propagates for the caller to back off.
    """
    batch = await store.claim_batch(batch_size)
    if not batch:
        return 0
    await publisher.publish([pending.message for pending in batch])
    await store.mark_published([pending.position for pending in batch], clock.now())
    return len(batch)


@dataclass(frozen=True)
class RelayBackoff:
    """Exponential delays between relay attempts while publishing fails (pure)."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failed attempts (0 after a success)."""
        if failures <= 0:
            return 0.0
        try:
            return min(self.maximum, self.initial * self.factor ** (failures - 1))
        except OverflowError:  # a long outage: the power left the float range
            return self.maximum

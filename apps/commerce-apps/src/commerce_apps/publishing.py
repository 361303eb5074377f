"""The relay's publisher, decorated to count what the broker acknowledged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core_saga.ports import EventPublisher, OutboundMessage

from commerce_apps.metrics import ServiceMetrics


@dataclass
class CountingPublisher:
    """Counts published events by type: the seed's business counters follow from them."""

    inner: EventPublisher
    metrics: ServiceMetrics

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        await self.inner.publish(messages)
        for message in messages:
            self.metrics.count_emitted(message.event_type)

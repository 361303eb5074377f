"""The relay's publisher, decorated to count what the broker acknowledged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core_saga.ports import EventPublisher, OutboundMessage

from commerce_apps.metrics import ServiceMetrics


@dataclass
class CountingPublisher:
    """Counts the events the broker acknowledged (``outbox_published``); a resend counts again."""

    inner: EventPublisher
    metrics: ServiceMetrics

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        await self.inner.publish(messages)
        self.metrics.outbox_published.inc(len(messages))

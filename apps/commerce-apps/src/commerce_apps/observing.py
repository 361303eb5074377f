"""Consumer hooks: metrics for every attempt, a span and a log context around each one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from adapters_kafka.policy import ConsumerHooks
from core_saga.messages import Envelope
from opentelemetry.sdk.trace import TracerProvider

from commerce_apps.logs import log_context
from commerce_apps.metrics import HANDLER_OUTCOME, ServiceMetrics
from commerce_apps.tracing import consumer_span


class ServiceHooks(ConsumerHooks):
    def __init__(self, metrics: ServiceMetrics, provider: TracerProvider | None = None) -> None:
        self.metrics = metrics
        self.tracer = provider.get_tracer("commerce.consumer") if provider else None

    def assigned(self, partitions: frozenset[tuple[str, int]]) -> None:
        """Dead letters of each topic start at 0 under the broker's own topic name (namespaced),
        before the group's first record from it (``ServiceMetrics`` starts them at build)."""
        for topic in {topic for topic, _ in partitions}:
            self.metrics.dead_letters.labels(topic=topic)

    def handling(
        self, topic: str, envelope: Envelope, headers: Mapping[str, str]
    ) -> AbstractContextManager[object]:
        return self._handling(topic, envelope, headers)

    @contextmanager
    def _handling(
        self, topic: str, envelope: Envelope, headers: Mapping[str, str]
    ) -> Iterator[None]:
        event_id = str(envelope.event_id)
        with log_context(
            service=self.metrics.service,
            order_id=str(envelope.correlation_id),
            event_id=event_id,
            event_type=envelope.event_type,
        ):
            if self.tracer is None:
                yield
                return
            with consumer_span(self.tracer, topic, envelope.event_type, event_id, headers):
                yield

    def handled(self, topic: str, event_type: str, seconds: float) -> None:
        # Applied or an inbox duplicate: the handlers do not tell this hook which.
        self.metrics.handler_duration.labels(
            event_type=event_type, outcome=HANDLER_OUTCOME
        ).observe(seconds)

    def failed(self, topic: str, error: BaseException, *, infrastructure: bool) -> None:
        self.metrics.handler_failures.labels(
            kind="infrastructure" if infrastructure else "poison"
        ).inc()

    def dead_lettered(self, topic: str, error: BaseException) -> None:
        self.metrics.dead_letters.labels(topic=topic).inc()

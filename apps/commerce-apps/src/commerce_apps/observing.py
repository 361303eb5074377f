"""Consumer hooks that feed the service's Prometheus metrics."""

from __future__ import annotations

from adapters_kafka.policy import ConsumerHooks

from commerce_apps.metrics import ServiceMetrics


class MetricsHooks(ConsumerHooks):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.metrics = metrics

    def handled(self, topic: str, event_type: str, seconds: float) -> None:
        self.metrics.handler_duration.labels(event_type=event_type, outcome="applied").observe(
            seconds
        )

    def failed(self, topic: str, error: BaseException, *, infrastructure: bool) -> None:
        self.metrics.handler_failures.labels(
            kind="infrastructure" if infrastructure else "poison"
        ).inc()

    def dead_lettered(self, topic: str, error: BaseException) -> None:
        self.metrics.dead_letters.labels(topic=topic).inc()

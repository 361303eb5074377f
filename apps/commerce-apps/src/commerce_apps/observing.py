"""Consumer hooks: metrics for every attempt and batch, spans and a log context around them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager

from adapters_kafka.policy import ConsumerHooks
from core_saga.messages import Envelope, dead_letter_topic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from commerce_apps.logs import log_context
from commerce_apps.metrics import HANDLER_OUTCOME, ServiceMetrics
from commerce_apps.tracing import batch_span, consumer_span, dead_letter_span, failed_in_span


class ServiceHooks(ConsumerHooks):
    def __init__(self, metrics: ServiceMetrics, provider: TracerProvider | None = None) -> None:
        self.metrics = metrics
        self.tracer = provider.get_tracer("commerce.consumer") if provider else None

    def assigned(self, partitions: frozenset[tuple[str, int]]) -> None:
        """Dead letters and batch durations of each topic start at 0 under the broker's own
        topic name (namespaced), before the group's first record from it (``ServiceMetrics``
        starts them at build)."""
        for topic in {topic for topic, _ in partitions}:
            self.metrics.start_topic(topic)

    def _fields(self, envelope: Envelope | None) -> dict[str, str]:
        """The log context of work on ``envelope`` (None: a record that did not decode)."""
        fields = {"service": self.metrics.service}
        if envelope is not None:
            fields |= {
                "order_id": str(envelope.correlation_id),
                "event_id": str(envelope.event_id),
                "event_type": envelope.event_type,
            }
        return fields

    @contextmanager
    def _within(
        self, fields: dict[str, str], span: Callable[[Tracer], AbstractContextManager[object]]
    ) -> Iterator[None]:
        """``fields`` as the log context, and inside it ``span`` when the service is traced."""
        with log_context(**fields):
            if self.tracer is None:
                yield
                return
            with span(self.tracer):
                yield

    def handling(
        self, topic: str, envelope: Envelope, headers: Mapping[str, str]
    ) -> AbstractContextManager[object]:
        fields = self._fields(envelope)
        return self._within(
            fields,
            lambda tracer: consumer_span(
                tracer, topic, envelope.event_type, fields["event_id"], headers
            ),
        )

    def handling_batch(
        self, topic: str, headers: Sequence[Mapping[str, str]]
    ) -> AbstractContextManager[object]:
        if self.tracer is None:  # the hot path untraced: no span, no header parsed
            return log_context(service=self.metrics.service)
        return self._within(
            {"service": self.metrics.service}, lambda tracer: batch_span(tracer, topic, headers)
        )

    def handled(self, topic: str, event_type: str, seconds: float) -> None:
        # Applied or an inbox duplicate: the handlers do not tell this hook which.
        self.metrics.handler_duration.labels(
            event_type=event_type, outcome=HANDLER_OUTCOME
        ).observe(seconds)

    def handled_batch(self, topic: str, count: int, seconds: float) -> None:
        self.metrics.batch_duration.labels(topic=topic).observe(seconds)

    def failed(self, topic: str, error: BaseException, *, infrastructure: bool) -> None:
        self.metrics.handler_failures.labels(
            kind="infrastructure" if infrastructure else "poison"
        ).inc()
        if self.tracer is not None:
            failed_in_span(error)  # the attempt's span: ``failed`` comes inside ``handling``

    def dead_lettering(
        self,
        topic: str,
        headers: Mapping[str, str],
        envelope: Envelope | None,
        error: BaseException,
    ) -> AbstractContextManager[object]:
        fields = self._fields(envelope)
        dlt, event_id = dead_letter_topic(topic), fields.get("event_id")
        return self._within(
            fields, lambda tracer: dead_letter_span(tracer, dlt, headers, event_id, error)
        )

    def dead_lettered(self, topic: str, error: BaseException) -> None:
        self.metrics.dead_letters.labels(topic=topic).inc()

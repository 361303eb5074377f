"""Prometheus metrics of one service, in its own registry (several services share a process)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core_saga.handlers.inventory import InventoryService
from core_saga.handlers.notification import NotificationService
from core_saga.handlers.order import OrderService
from core_saga.handlers.payment import PaymentService
from core_saga.messages import TOPIC_OF, Envelope
from core_saga.orders import Order, OrderStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# 35 and 45 beside 30, SAGA_TIMEOUT's default: a timed-out saga takes 30 s and a sweep's
# interval, so with 30 and 60 alone its quantiles read 40 to 58 s.
SAGA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 35, 45, 60)

# Seed names, counted from the events a service's transactions commit (``count_committed``).
_EMITTED = {
    "OrderCreated": "orders_created",
    "OrderConfirmed": "orders_confirmed",
    "OrderCancelled": "orders_cancelled",
    "StockReserved": "stock_reserved",
}
_PAYMENT_OUTCOMES = {"PaymentSucceeded": "success", "PaymentFailed": "failure"}

# The label values the code uses, all from small fixed sets: each service starts its series
# at 0 (``ServiceMetrics._start_at_zero``), so that ``increase()`` and ``rate()``, which take
# a series' first sample as its baseline, see its first event. Never for unbounded values.
HANDLED_BY: Mapping[str, frozenset[str]] = {
    "order": OrderService.subscriptions,
    "inventory": InventoryService.subscriptions,
    "payment": PaymentService.subscriptions,
    "notification": NotificationService.subscriptions,
}
FAILURE_KINDS = ("infrastructure", "poison")
HANDLER_OUTCOME = "applied"  # inbox duplicates too: the consumer hooks cannot tell them apart
SETTLED_STATUSES = tuple(status.value for status in OrderStatus if status.terminal)


class ServiceRegistry(CollectorRegistry):
    """A registry without ``<name>_created`` samples: they double the series of every counter
    and histogram (and read oddly: ``orders_created_created``), and no panel reads them.
    Scoped to the services' registries, unlike prometheus-client's process-wide switch."""

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            if metric.type in ("counter", "histogram", "summary"):
                created = f"{metric.name}_created"
                metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


@dataclass
class ServiceMetrics:
    service: str
    registry: CollectorRegistry = field(default_factory=ServiceRegistry)
    namespace: str = ""  # the Kafka namespace, which prefixes the topics labelling dead letters
    # process_cpu_seconds_total, process_resident_memory_bytes: for one service per process
    # (``Platform`` gives them to the first it serves when several share one), or a sum over
    # the services would count the same process several times.
    process_metrics: bool = True

    def __post_init__(self) -> None:
        r = self.registry
        if self.process_metrics:
            ProcessCollector(registry=r)
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records between the committed offset and the partition end",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.consumer_ready = Gauge(
            "consumer_ready",
            "1 while the consumer consumes and the broker answers (readiness' broker check):"
            " 0 when it stopped, cannot join, or the broker hangs",
            registry=r,
        )
        self.consumer_stalled = Gauge(
            "consumer_stalled_partitions",
            "Partitions the consumer cannot fetch (a record batch it cannot decode), paused",
            registry=r,
        )
        self.orders_created = Counter("orders_created", "Orders placed", registry=r)
        self.orders_confirmed = Counter("orders_confirmed", "Orders confirmed", registry=r)
        self.orders_cancelled = Counter("orders_cancelled", "Orders cancelled", registry=r)
        self.stock_reserved = Counter("stock_reserved", "Reservations made", registry=r)
        self.payments_processed = Counter(
            "payments_processed", "Charges by outcome", ["outcome"], registry=r
        )
        self.outbox_published = Counter(
            "outbox_published", "Outbox events acknowledged by the broker", registry=r
        )
        self.outbox_oldest_age = Gauge(
            "outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished row", registry=r
        )
        # Exported by their own service alone: elsewhere a constant 0 read as "none waiting".
        self.payment_longest_wait = Gauge(
            "payment_oldest_due_age_seconds",
            "How long the payment waiting longest on the gateway has waited (0: none)",
            registry=r if self.service == "payment" else None,
        )
        self.notification_longest_wait = Gauge(
            "notification_oldest_unsent_age_seconds",
            "How long the notification unsent longest has waited (0: none)",
            registry=r if self.service == "notification" else None,
        )
        self.http_duration = Histogram(
            "http_server_request_duration_seconds",
            "HTTP request duration",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.handler_duration = Histogram(
            "event_handler_duration_seconds",
            "Time to apply one consumed event; in a batch, the batch's time divided among its"
            " events",
            ["event_type", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "event_batch_duration_seconds",
            "Time to apply a batch of consumed events in one transaction (locks, inbox, commit)",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter(
            "dead_letters", "Messages sent to a dead-letter topic", ["topic"], registry=r
        )
        self.handler_failures = Counter(
            "event_handler_failures", "Failed handler attempts", ["kind"], registry=r
        )
        self.saga_duration = Histogram(
            "saga_duration_seconds",
            "Order creation to terminal state",
            ["status"],
            buckets=SAGA_BUCKETS,
            registry=r,
        )
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Create the series this service can move, at 0 (``labels()`` creates a child)."""
        handled = HANDLED_BY.get(self.service, frozenset())
        for event_type in sorted(handled):
            self.handler_duration.labels(event_type=event_type, outcome=HANDLER_OUTCOME)
        for topic in sorted({TOPIC_OF[event_type] for event_type in handled}):
            self.start_topic(f"{self.namespace}{topic}")
        if handled:
            for kind in FAILURE_KINDS:
                self.handler_failures.labels(kind=kind)
        if self.service == "payment":
            for outcome in _PAYMENT_OUTCOMES.values():
                self.payments_processed.labels(outcome=outcome)
        if self.service == "order":
            for status in SETTLED_STATUSES:
                self.saga_duration.labels(status=status)

    def start_topic(self, topic: str) -> None:
        """A consumed topic's dead letters and batch durations, at 0 until their first."""
        self.dead_letters.labels(topic=topic)
        self.batch_duration.labels(topic=topic)

    def saga_settled(self, order: Order) -> None:
        """Creation to terminal state, observed once per order after its commit."""
        ended = order.updated_at or order.created_at
        self.saga_duration.labels(status=order.status.value).observe(
            max(0.0, (ended - order.created_at).total_seconds())
        )

    def count_committed(self, events: Sequence[Envelope]) -> None:
        """Business counters count what committed, once: not when the relay publishes, which
        lags behind during an outage and sends again after a resend or a crash."""
        for event in events:
            name = _EMITTED.get(event.event_type)
            if name is not None:
                counter: Counter = getattr(self, name)
                counter.inc()
            elif (outcome := _PAYMENT_OUTCOMES.get(event.event_type)) is not None:
                self.payments_processed.labels(outcome=outcome).inc()

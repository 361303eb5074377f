"""Prometheus metrics of one service, in its own registry (several services share a process)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core_saga.messages import Envelope
from core_saga.orders import Order
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SAGA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Seed names, counted from the events a service's transactions commit (``count_committed``).
_EMITTED = {
    "OrderCreated": "orders_created",
    "OrderConfirmed": "orders_confirmed",
    "OrderCancelled": "orders_cancelled",
    "StockReserved": "stock_reserved",
}


@dataclass
class ServiceMetrics:
    service: str
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records between the committed offset and the partition end",
            ["group", "topic", "partition"],
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
        self.http_duration = Histogram(
            "http_server_request_duration_seconds",
            "HTTP request duration",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.handler_duration = Histogram(
            "event_handler_duration_seconds",
            "Time to apply one consumed event",
            ["event_type", "outcome"],
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
            elif event.event_type == "PaymentSucceeded":
                self.payments_processed.labels(outcome="success").inc()
            elif event.event_type == "PaymentFailed":
                self.payments_processed.labels(outcome="failure").inc()

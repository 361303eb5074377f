"""The composition root: one dependency-injector container per service.

``ServiceContainer`` holds what every service has (settings, engine, clock, Kafka publisher,
outbox relay, consumer); each subclass adds its unit of work, handler and routes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from adapters_kafka.consumer import ConsumerRunner
from adapters_kafka.policy import RetryPolicy
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from adapters_kafka.topics import ensure_topics
from adapters_postgres.engine import SessionGuards, create_engine
from adapters_postgres.relay import RelayRunner, RelaySettings
from adapters_postgres.uow import (
    inventory_uow_factory,
    notification_uow_factory,
    order_uow_factory,
    payment_uow_factory,
)
from core_saga.clock import SystemClock
from core_saga.handlers.inventory import InventoryService
from core_saga.handlers.notification import LoggingNotifier, NotificationService
from core_saga.handlers.order import OrderService
from core_saga.handlers.payment import PaymentService, SimulatedGateway
from core_saga.messages import SAGA_TOPICS
from dependency_injector import containers, providers
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from commerce_apps.metrics import ServiceMetrics
from commerce_apps.observing import ServiceHooks
from commerce_apps.publishing import CountingPublisher
from commerce_apps.services.inventory import inventory_routes
from commerce_apps.services.notification import notification_routes
from commerce_apps.services.order import order_routes
from commerce_apps.services.payment import payment_routes
from commerce_apps.settings import Settings
from commerce_apps.tracing import (
    instrument_engine,
    trace_headers,
    traced_publisher,
    tracer_provider,
)


async def ensure_saga_topics(settings: Settings, client: str = "admin") -> list[str]:
    """Create the saga topics and their DLTs with the configured partitions and replicas."""
    return await ensure_topics(
        kafka_settings(settings, client),
        SAGA_TOPICS,
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )


def kafka_settings(settings: Settings, service: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{service}-service",
        security_protocol=settings.kafka_security_protocol,
        sasl_mechanism=settings.kafka_sasl_mechanism,
        sasl_username=settings.kafka_sasl_username,
        sasl_password=settings.kafka_sasl_password,
        ssl_cafile=settings.kafka_ssl_cafile,
        namespace=settings.kafka_namespace,
    )


def relay_settings(settings: Settings) -> RelaySettings:
    return RelaySettings(
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_interval,
        retention=timedelta(hours=settings.outbox_retention_hours),
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """``CONSUMER_RETRIES`` retries after the first attempt (DESIGN §4: "retried 3 times")."""
    return RetryPolicy(
        attempts=settings.consumer_retries + 1, backoff=settings.consumer_retry_backoff
    )


def traced_engine(
    settings: Settings, provider: TracerProvider | None, service: str = "service"
) -> AsyncEngine:
    guards = SessionGuards(
        command_timeout=settings.database_command_timeout,
        idle_in_transaction=settings.database_idle_in_transaction_timeout,
    )
    engine = create_engine(
        database_url(settings),
        connect_args=guards.connect_args(),
        application_name=f"commerce-{service}",
    )
    if provider is not None:
        instrument_engine(engine, provider)
    return engine


def database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise ValueError("DATABASE_URL is not set")
    return settings.database_url


class ServiceContainer(containers.DeclarativeContainer):
    service = providers.Dependency(instance_of=str)
    settings = providers.Dependency(instance_of=Settings)
    consumer_options: Any = providers.Object(None)

    span_exporter: Any = providers.Object(None)  # tests collect spans in memory

    url = providers.Callable(database_url, settings)
    process_metrics: Any = providers.Object(True)  # False for all but one sharing a process
    metrics = providers.Singleton(
        ServiceMetrics,
        service=service,
        namespace=settings.provided.kafka_namespace,
        process_metrics=process_metrics,
    )
    service_name: Any = providers.Object(None)  # OTEL_SERVICE_NAME, for commerce run only
    tracing = providers.Singleton(tracer_provider, service, span_exporter, service_name)
    trace_context = providers.Callable(lambda p: trace_headers if p else None, tracing)
    clock = providers.Singleton(SystemClock)
    engine = providers.Singleton(traced_engine, settings, tracing, service)
    kafka = providers.Singleton(kafka_settings, settings, service)
    publisher = providers.Singleton(KafkaPublisher, kafka)
    relay = providers.Singleton(
        RelayRunner,
        url,
        service,
        providers.Factory(
            CountingPublisher,
            providers.Callable(traced_publisher, publisher, tracing, kafka.provided.named),
            metrics,
        ),
        clock,
        providers.Callable(relay_settings, settings),
    )
    hooks = providers.Singleton(ServiceHooks, metrics, tracing)


def consumer_of(handler: Any) -> Any:
    """The consumer provider of a service whose handler provider is ``handler``."""
    base = ServiceContainer
    return providers.Singleton(
        ConsumerRunner,
        base.kafka,
        providers.Callable(lambda name: f"{name}-service", base.service),
        handler,
        publisher=base.publisher,
        retry=providers.Callable(retry_policy, base.settings),
        hooks=base.hooks,
        clock=base.clock,
        consumer_options=base.consumer_options,
    )


def units_of_work(factory: Any) -> tuple[Any, Any]:
    """The unit-of-work providers of a service: read-write (handler), read-only (routes)."""
    base = ServiceContainer
    return (
        providers.Singleton(
            factory,
            base.engine,
            base.trace_context,
            on_commit=base.metrics.provided.count_committed,
        ),
        providers.Singleton(factory, base.engine, base.trace_context, read_only=True),
    )


def _seconds(setting: str) -> providers.Callable[timedelta]:
    """A setting given in seconds, as the ``timedelta`` the core takes."""
    return providers.Callable(
        lambda s: timedelta(seconds=getattr(s, setting)), ServiceContainer.settings
    )


class OrderContainer(ServiceContainer):
    uow, reader = units_of_work(order_uow_factory)
    handler = providers.Singleton(
        OrderService,
        uow=uow,
        clock=ServiceContainer.clock,
        saga_timeout=_seconds("saga_timeout"),
        key_ttl=providers.Callable(
            lambda s: timedelta(hours=s.idempotency_ttl_hours), ServiceContainer.settings
        ),
        on_settled=ServiceContainer.metrics.provided.saga_settled,
    )
    routes = providers.Callable(order_routes, handler, reader)
    consumer = consumer_of(handler)


class InventoryContainer(ServiceContainer):
    uow, reader = units_of_work(inventory_uow_factory)
    handler = providers.Singleton(InventoryService, uow=uow, clock=ServiceContainer.clock)
    routes = providers.Callable(inventory_routes, reader)
    consumer = consumer_of(handler)


class PaymentContainer(ServiceContainer):
    uow, reader = units_of_work(payment_uow_factory)
    gateway = providers.Singleton(
        SimulatedGateway,
        success_rate=ServiceContainer.settings.provided.payment_success_rate,
        forced=ServiceContainer.settings.provided.payment_force_outcome,
        latency=ServiceContainer.settings.provided.payment_gateway_latency,
    )
    handler = providers.Singleton(
        PaymentService,
        uow=uow,
        clock=ServiceContainer.clock,
        gateway=gateway,
        settle_after=_seconds("payment_settle_after"),
        gateway_timeout=_seconds("payment_gateway_timeout"),
    )
    routes = providers.Callable(payment_routes, reader)
    consumer = consumer_of(handler)


class NotificationContainer(ServiceContainer):
    uow, reader = units_of_work(notification_uow_factory)
    notifier = providers.Singleton(LoggingNotifier)
    handler = providers.Singleton(
        NotificationService,
        uow=uow,
        clock=ServiceContainer.clock,
        notifier=notifier,
        resend_after=_seconds("notification_resend_after"),
        notifier_timeout=_seconds("notifier_timeout"),
    )
    routes = providers.Callable(notification_routes, reader)
    consumer = consumer_of(handler)


CONTAINERS: dict[str, type[ServiceContainer]] = {
    "order": OrderContainer,
    "inventory": InventoryContainer,
    "payment": PaymentContainer,
    "notification": NotificationContainer,
}


def container_for(service: str, settings: Settings, **overrides: Any) -> ServiceContainer:
    container = CONTAINERS[service](service=service, settings=settings)
    for name, value in overrides.items():
        getattr(container, name).override(providers.Object(value))
    return container

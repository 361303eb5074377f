"""A service as a Starlette app: routes, docs, health, metrics, and its background workers.

The lifespan starts the outbox relay, the Kafka publisher and consumer (retried in the
background while the broker is unreachable, so the API and its outbox serve meanwhile) and
(for the order service) the deadline sweep. On SIGTERM it drains the consumer first, cancels
the relay, sweeps and gauges, and stops the publisher last (dead letters in flight still go
out). Outbox rows not yet relayed stay in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from adapters_kafka.policy import broker_may_recover
from adapters_postgres.housekeeping import purge_expired_keys, purge_processed_events
from adapters_postgres.migrations import is_migrated
from adapters_postgres.outbox import PostgresOutboxStore
from core_saga.handlers.order import OrderService
from core_saga.relay import RelayBackoff
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware

from commerce_apps.container import ServiceContainer, ensure_saga_topics
from commerce_apps.http.docs import docs_routes
from commerce_apps.http.health import health_routes
from commerce_apps.http.middleware import RequestMetrics
from commerce_apps.http.problems import EXCEPTION_HANDLERS
from commerce_apps.services import inventory, notification, order, payment

log = logging.getLogger(__name__)

OPERATIONS = {
    "order": order.OPERATIONS,
    "inventory": inventory.OPERATIONS,
    "payment": payment.OPERATIONS,
    "notification": notification.OPERATIONS,
}
VERSION = "0.1.0"
SHUTDOWN_SECONDS = 15.0
SUPERVISOR_BACKOFF = RelayBackoff(initial=0.5)  # to RECOVERY_BACKOFF_MAX, as every recovery


async def _every(seconds: float, step: Callable[[], Awaitable[Any]], name: str) -> None:
    """Run ``step`` forever, ``seconds`` apart; a failing step is logged and tried again."""
    while True:
        try:
            await step()
        except Exception:
            log.exception("%s failed; retrying", name)
        await asyncio.sleep(seconds)


async def _supervise(
    run: Callable[[], Awaitable[None]],
    name: str,
    backoff: RelayBackoff = SUPERVISOR_BACKOFF,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Keep ``run`` going: restart it after a failure (broker down at start), backing off.

    The delay doubles while ``run`` fails fast, up to ``backoff.maximum``; a run that lasted
    longer than that was healthy, so its failure is the first of a new series.
    """
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await run()
            return
        except Exception as exc:
            healthy = loop.time() - started > backoff.maximum
            failures = 1 if healthy else failures + 1
            delay = backoff.delay(failures)
            log.warning("%s stopped (%s); restarting in %.1f s", name, exc, delay)
        await sleep(delay)


def build_app(container: ServiceContainer, *, ensure_topics: bool = False) -> Starlette:
    """The service's app; ``ensure_topics`` creates the saga topics once the broker answers."""
    service: str = container.service()
    settings = container.settings()
    metrics = container.metrics()
    engine = container.engine()

    async def database_up() -> bool:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def migrated() -> bool:
        return await is_migrated(engine, service)

    async def broker_up() -> bool:
        return bool(container.consumer().ready) and await container.publisher().ping()

    async def outbox_age() -> None:
        age = await PostgresOutboxStore(engine).oldest_unpublished_age(container.clock().now())
        metrics.outbox_oldest_age.set(age)

    async def consumer_lag() -> None:
        consumer = container.consumer()
        metrics.consumer_lag.clear()
        for tp, lag in consumer.lag().items():
            metrics.consumer_lag.labels(
                group=consumer.group_id, topic=tp.topic, partition=str(tp.partition)
            ).set(lag)

    async def housekeeping() -> None:
        now = container.clock().now()
        cutoff = now - timedelta(hours=settings.inbox_retention_hours)
        purged = await purge_processed_events(engine, cutoff)
        if service == "order":
            purged += await purge_expired_keys(engine, now)
        if purged:
            log.info("%s housekeeping purged %d rows", service, purged)

    checks = {"database": database_up, "migrations": migrated, "broker": broker_up}
    routes = [
        *container.routes(),
        *health_routes(checks, metrics.registry),
        *docs_routes(f"{service} service", VERSION, OPERATIONS[service]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        publisher = container.publisher()
        consumer = container.consumer()

        async def connect_and_consume() -> None:
            """Retried while the broker is unreachable; the API and outbox serve meanwhile."""
            try:
                if ensure_topics:
                    await ensure_saga_topics(settings, service)
                await publisher.start()
            except Exception as exc:
                if not broker_may_recover(exc):  # an ERROR to alert on, not a warning
                    log.error(
                        "the broker at %s refuses %s: %r; check the KAFKA_* and TOPIC_* "
                        "settings (retrying)",
                        settings.kafka_bootstrap_servers,
                        service,
                        exc,
                    )
                raise
            await consumer.run()

        tasks = [
            asyncio.create_task(container.relay().run(), name=f"{service}-relay"),
            asyncio.create_task(
                _supervise(connect_and_consume, "broker connection"), name=f"{service}-consumer"
            ),
            asyncio.create_task(_every(5.0, outbox_age, "outbox age"), name=f"{service}-age"),
            asyncio.create_task(_every(5.0, consumer_lag, "consumer lag"), name=f"{service}-lag"),
            asyncio.create_task(
                _every(settings.housekeeping_interval, housekeeping, "housekeeping"),
                name=f"{service}-housekeeping",
            ),
        ]
        handler = container.handler()
        if isinstance(handler, OrderService):
            tasks.append(
                asyncio.create_task(
                    _every(settings.deadline_sweep_interval, handler.sweep_overdue, "sweep"),
                    name="order-deadlines",
                )
            )
        log.info("%s service started", service)
        try:
            yield
        finally:  # bounded: an unreachable broker must not hold the shutdown forever
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), SHUTDOWN_SECONDS)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(publisher.stop(), SHUTDOWN_SECONDS)
            await engine.dispose()
            log.info("%s service stopped", service)

    middleware = [Middleware(RequestMetrics, metrics=metrics, routes=routes)]
    provider = container.tracing()
    if provider is not None:
        middleware.append(Middleware(OpenTelemetryMiddleware, tracer_provider=provider))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )

"""A service as a Starlette app: routes, docs, health, metrics, and its background workers.

The lifespan starts the outbox relay, the Kafka publisher and consumer (retried in the
background while the broker is unreachable, so the API and its outbox serve meanwhile) and
(for the order service) the deadline sweep. On SIGTERM it drains the consumer first, cancels
the relay, sweeps and gauges, stops the publisher (dead letters in flight still go out), then
the tracer provider, within ``tracing.SHUTDOWN_SECONDS``. Outbox rows not yet relayed stay in
the outbox for the next start.

The periodic tasks run through ``jobs.every``: an outage is logged without flooding, and a
step leaves a trace only when it did something.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from importlib.metadata import version

from adapters_kafka.policy import broker_may_recover
from adapters_postgres.engine import named_lock_key, try_session_lock
from adapters_postgres.housekeeping import purge_expired_keys, purge_processed_events
from adapters_postgres.migrations import is_migrated
from adapters_postgres.outbox import PostgresOutboxStore
from core_saga.handlers.notification import NotificationService
from core_saga.handlers.order import OrderService
from core_saga.handlers.payment import PaymentService
from prometheus_client import Gauge
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.middleware import Middleware

from commerce_apps.broker_errors import login_refused
from commerce_apps.container import ServiceContainer, ensure_saga_topics
from commerce_apps.http.docs import docs_routes
from commerce_apps.http.health import health_routes
from commerce_apps.http.middleware import RequestMetrics
from commerce_apps.http.problems import EXCEPTION_HANDLERS
from commerce_apps.http.spans import ServerSpans
from commerce_apps.jobs import every, is_infrastructure, supervise
from commerce_apps.services import inventory, notification, order, payment
from commerce_apps.tracing import shutdown

log = logging.getLogger(__name__)

OPERATIONS = {
    "order": order.OPERATIONS,
    "inventory": inventory.OPERATIONS,
    "payment": payment.OPERATIONS,
    "notification": notification.OPERATIONS,
}
VERSION = version("commerce-apps")  # the installed distribution's: one place to bump
SHUTDOWN_SECONDS = 15.0


def build_app(container: ServiceContainer, *, ensure_topics: bool = False) -> Starlette:
    """The service's app; ``ensure_topics`` creates the saga topics once the broker answers."""
    service: str = container.service()
    settings = container.settings()
    metrics = container.metrics()
    engine = container.engine()
    provider = container.tracing()
    jobs = provider.get_tracer("commerce.jobs") if provider is not None else None

    async def database_up() -> bool:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def migrated() -> bool:
        return await is_migrated(engine, service)

    async def broker_up() -> bool:
        return bool(container.consumer().ready) and await container.publisher().ping()

    def sample_age(
        gauge: Gauge, age: Callable[[], Awaitable[float]]
    ) -> Callable[[], Awaitable[None]]:
        """A periodic job setting ``gauge`` to ``age()``; NaN while the database does not
        answer: "unknown", where the last value (0 at start) would read "none waiting"
        through the outage, when it is least true."""

        async def sample() -> None:
            try:
                gauge.set(await age())
            except Exception as exc:
                if is_infrastructure(exc):
                    gauge.set(math.nan)
                raise

        return sample

    def retrying(
        kind: str,
        interval: float,
        sweep: Callable[[], Awaitable[int]],
        longest_wait: Callable[[], Awaitable[timedelta]],
        gauge: Gauge,
    ) -> list[asyncio.Task[None]]:
        """The jobs of remote calls made after a commit (``after_commit``): the sweep that
        makes again what they left undone, on one replica at a time (each would call the
        remote side for every row), and the gauge of the longest wait."""
        lock = named_lock_key(f"{kind}-sweep")

        async def swept() -> int:
            async with try_session_lock(engine, lock) as sweeping:
                return await sweep() if sweeping else 0

        async def waited() -> float:
            return (await longest_wait()).total_seconds()

        sweeping = every(interval, swept, f"{kind} sweep", jobs)
        gauging = every(5.0, sample_age(gauge, waited), f"{kind} wait", jobs)
        return [
            asyncio.create_task(sweeping, name=f"{kind}-sweep"),
            asyncio.create_task(gauging, name=f"{kind}-wait"),
        ]

    outbox = PostgresOutboxStore(engine)
    outbox_age = sample_age(
        metrics.outbox_oldest_age,
        lambda: outbox.oldest_unpublished_age(container.clock().now()),
    )

    async def consumer_lag() -> None:
        """Lag, stalled partitions, and whether the consumer works at all: its lag series go
        when it stops, and stay as they were while the broker hangs."""
        consumer = container.consumer()
        metrics.consumer_ready.set(1 if await broker_up() else 0)
        metrics.consumer_stalled.set(len(consumer.stalled))
        metrics.consumer_lag.clear()
        for tp, lag in consumer.lag().items():
            metrics.consumer_lag.labels(
                group=consumer.group_id, topic=tp.topic, partition=str(tp.partition)
            ).set(lag)

    async def housekeeping() -> int:
        now = container.clock().now()
        cutoff = now - timedelta(hours=settings.inbox_retention_hours)
        purged = await purge_processed_events(engine, cutoff)
        if service == "order":
            purged += await purge_expired_keys(engine, now)
        if purged:
            log.info("%s housekeeping purged %d rows", service, purged)
        return purged

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
            if ensure_topics:
                await ensure_saga_topics(settings, service)
            await publisher.start()
            await consumer.run()

        def advice(exc: Exception) -> str | None:
            """A broker that refuses the settings will not change its mind: an ERROR."""
            servers = settings.kafka_bootstrap_servers
            if login := login_refused(servers, exc):
                return login
            if broker_may_recover(exc):
                return None
            return (
                f"the broker at {servers} refuses {service}: check the KAFKA_* and TOPIC_* settings"
            )

        tasks = [
            asyncio.create_task(container.relay().run(), name=f"{service}-relay"),
            asyncio.create_task(
                supervise(connect_and_consume, "broker connection", advice=advice),
                name=f"{service}-consumer",
            ),
            asyncio.create_task(every(5.0, outbox_age, "outbox age", jobs), name=f"{service}-age"),
            asyncio.create_task(
                every(5.0, consumer_lag, "consumer lag", jobs), name=f"{service}-lag"
            ),
            asyncio.create_task(
                every(settings.housekeeping_interval, housekeeping, "housekeeping", jobs),
                name=f"{service}-housekeeping",
            ),
        ]
        handler = container.handler()
        if isinstance(handler, OrderService):
            sweep = every(
                settings.deadline_sweep_interval, handler.sweep_overdue, "deadline sweep", jobs
            )
            tasks.append(asyncio.create_task(sweep, name="order-deadlines"))
        if isinstance(handler, PaymentService):
            tasks += retrying(
                "payment",
                settings.payment_sweep_interval,
                handler.settle_stale,
                handler.longest_wait,
                metrics.payment_longest_wait,
            )
        if isinstance(handler, NotificationService):
            tasks += retrying(
                "notification",
                settings.notification_sweep_interval,
                handler.send_unsent,
                handler.longest_wait,
                metrics.notification_longest_wait,
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
            if provider is not None:  # bounded: a collector that is down must not hold it
                await shutdown(provider)
            log.info("%s service stopped", service)

    middleware = [Middleware(RequestMetrics, metrics=metrics, routes=routes)]
    if provider is not None:
        middleware.append(Middleware(ServerSpans, provider=provider, routes=routes))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # A trailing slash is a 404, not a redirect to an absolute URL built from the Host header
    # (the API's own Location and Link headers are relative, to pass through proxies).
    app.router.redirect_slashes = False
    return app

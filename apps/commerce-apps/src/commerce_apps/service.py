"""One service in its own process, against external PostgreSQL and Kafka (``commerce run``)."""

from __future__ import annotations

import asyncio

import uvicorn
from adapters_kafka.topics import ensure_topics
from adapters_postgres.engine import create_engine
from adapters_postgres.migrations import is_at_head
from core_saga.messages import SAGA_TOPICS
from sqlalchemy.pool import NullPool

from commerce_apps.app import build_app
from commerce_apps.container import container_for, kafka_settings
from commerce_apps.platform import PlatformError, check_port_free
from commerce_apps.settings import ServiceName, Settings


async def preflight(service: ServiceName, settings: Settings, seconds: float = 15) -> None:
    """Fail fast, in one line, when the database or broker is unreachable or not set up."""
    engine = create_engine(settings.database_url or "", poolclass=NullPool)
    try:
        async with asyncio.timeout(seconds):
            migrated = await is_at_head(engine, service)
    except Exception as exc:
        raise PlatformError(f"{service} database unreachable: {exc}") from None
    finally:
        await engine.dispose()
    if not migrated:
        raise PlatformError(f"{service} database is not migrated: run 'commerce migrate {service}'")
    kafka = kafka_settings(settings, service)
    try:
        await asyncio.wait_for(
            ensure_topics(kafka, SAGA_TOPICS, partitions=settings.topic_partitions), seconds
        )
    except Exception as exc:
        raise PlatformError(
            f"broker unreachable at {settings.kafka_bootstrap_servers}: {exc!r}"
        ) from None


async def serve_one(service: ServiceName, settings: Settings) -> None:
    port = settings.port_for(service)
    check_port_free(settings.host, port)
    await preflight(service, settings)
    app = build_app(container_for(service, settings))
    config = uvicorn.Config(app, host=settings.host, port=port, log_config=None, lifespan="on")
    await uvicorn.Server(config).serve()

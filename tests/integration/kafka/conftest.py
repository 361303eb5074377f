"""Fixtures of the Kafka integration tests: consumer runners stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from adapters_kafka.consumer import ConsumerRunner
from adapters_kafka.policy import RetryPolicy
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from core_saga.ports import EventHandler

from tests.fixtures.kafka import unique_name

QUICK_RETRY = RetryPolicy(
    attempts=3, backoff=0.01, infrastructure_backoff=0.01, infrastructure_backoff_max=0.05
)

RunnerFactory = Callable[..., Awaitable[ConsumerRunner]]


@pytest.fixture
async def start_runner(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    kafka_consumer_options: Mapping[str, Any],
) -> AsyncIterator[RunnerFactory]:
    """Start a ConsumerRunner on ``topic`` with quick retries; all are stopped afterwards."""
    runners: list[ConsumerRunner] = []

    async def start(
        handler: EventHandler, topic: str, group_id: str | None = None, **options: Any
    ) -> ConsumerRunner:
        runner = ConsumerRunner(
            kafka_settings,
            group_id or unique_name("group"),
            handler,
            publisher=kafka_publisher,
            topics=[topic],
            retry=QUICK_RETRY,
            consumer_options=kafka_consumer_options,
            **options,
        )
        runners.append(runner)
        await runner.start()
        return runner

    yield start
    for runner in runners:
        await runner.stop()

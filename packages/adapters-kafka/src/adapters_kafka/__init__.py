"""Kafka adapters for core_saga: publisher, consumer runner, topic administration."""

from adapters_kafka.consumer import ConsumerRunner
from adapters_kafka.policy import ConsumerHooks, RetryPolicy, is_transient
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from adapters_kafka.topics import ensure_topics

__all__ = [
    "ConsumerHooks",
    "ConsumerRunner",
    "KafkaPublisher",
    "KafkaSettings",
    "RetryPolicy",
    "ensure_topics",
    "is_transient",
]

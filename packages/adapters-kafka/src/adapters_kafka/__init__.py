"""Kafka adapters for core_saga: publisher, consumer runner, topic administration."""

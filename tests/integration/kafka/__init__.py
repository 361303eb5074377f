"""Integration tests of adapters_kafka on a real Kafka-protocol broker."""

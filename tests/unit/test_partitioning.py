"""Keys land on the partition every Kafka client picks: murmur2 as Java computes it."""

from __future__ import annotations

import pytest
from adapters_kafka.partitioning import KeyPartitioner, murmur2
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


@given(st.binary(max_size=80))
def test_murmur2_equals_aiokafka_for_any_bytes(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


def test_known_hashes_from_the_java_client() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (as signed 32-bit ints there)
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536}
    for data, signed in cases.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


@given(st.binary(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_key_partitioner_agrees_with_aiokafka(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert KeyPartitioner()(key, partitions, partitions) == DefaultPartitioner()(
        key, partitions, partitions
    )


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert KeyPartitioner()(None, [0, 1, 2], [2]) == 2

"""The platform's ids are UUIDv7: time first, so every index on them takes inserts at its end."""

from __future__ import annotations

import time
import uuid

import pytest
from core_saga.ids import new_id, unix_ms_of, uuid7_at
from core_saga.memory import SagaHarness, order_request
from core_saga.messages import decode
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.test_harness import MOUSE

pytestmark = pytest.mark.unit

MILLISECONDS = st.integers(min_value=0, max_value=(1 << 48) - 1)
RANDOM_BITS = st.integers(min_value=0, max_value=(1 << 74) - 1)


def test_a_new_id_is_a_uuid7_of_now() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id()
    after = time.time_ns() // 1_000_000
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert before <= unix_ms_of(made) <= after


def test_an_id_made_in_a_later_millisecond_sorts_after_as_int_bytes_and_text() -> None:
    first = new_id()
    while time.time_ns() // 1_000_000 <= unix_ms_of(first):
        pass  # into the next millisecond
    second = new_id()
    assert first < second
    assert first.bytes < second.bytes  # PostgreSQL compares uuids byte by byte
    assert str(first) < str(second)


def test_ids_are_unique() -> None:
    assert len({new_id() for _ in range(100_000)}) == 100_000


@given(MILLISECONDS, RANDOM_BITS)
def test_the_layout_keeps_the_millisecond_the_version_and_74_random_bits(
    unix_ms: int, bits: int
) -> None:
    made = uuid7_at(unix_ms, bits)
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert unix_ms_of(made) == unix_ms
    rand_a, rand_b = (made.int >> 64) & 0xFFF, made.int & ((1 << 62) - 1)
    assert rand_a << 62 | rand_b == bits


@given(MILLISECONDS, st.integers(min_value=1, max_value=1 << 20), RANDOM_BITS, RANDOM_BITS)
def test_ids_sort_by_their_millisecond(early: int, later_by: int, a: int, b: int) -> None:
    late = min(early + later_by, (1 << 48) - 1)
    if late > early:
        assert uuid7_at(early, a) < uuid7_at(late, b)


def test_the_rfc_9562_example() -> None:
    """RFC 9562, appendix A.6: 2022-02-22 19:22:22 UTC, and its random bits."""
    made = uuid7_at(0x017F22E279B0, 0xCC3 << 62 | 0x18C4DC0C0C07398F)
    assert str(made) == "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"


def test_out_of_range_and_other_versions_are_refused() -> None:
    with pytest.raises(ValueError, match="48 bits"):
        uuid7_at(1 << 48, 0)
    with pytest.raises(ValueError, match="not a UUIDv7"):
        unix_ms_of(uuid.uuid4())


async def test_orders_events_payments_and_notifications_get_uuid7_ids() -> None:
    harness = SagaHarness()
    await harness.place_order(order_request({MOUSE: 1}))
    [order_id] = harness.order_ids
    harness.gateway.decide(order_id, True)
    await harness.run_until_quiet()
    snapshot = await harness.snapshot()
    made = [
        order_id,
        *(payment.id for payment in snapshot.payments[order_id]),
        *(notice.id for notice in snapshot.notifications[order_id]),
        *(
            decode(message.value).event_id
            for topic in harness.broker.topics()
            for partition in range(harness.broker.partitions)
            for message in harness.broker.log(topic, partition)
        ),
    ]
    assert len(made) == 7  # the order, its payment and notice, four events (created to confirmed)
    assert {each.version for each in made} == {7}

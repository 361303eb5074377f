"""Any sequence of create-order calls: one order per key, replay for the same request, else 409."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from core_saga.handlers.order import OrderService, PlaceOrder
from core_saga.memory import ManualClock, MemoryOrderDatabase
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.property

CUSTOMER = "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
MOUSE = "11111111-1111-1111-1111-111111111111"
STAND = "55555555-5555-5555-5555-555555555555"
MICE = f'{{"productId":"{MOUSE}","quantity":2,"unitPrice":10.5}}'
MORE_MICE = f'{{"productId":"{MOUSE}","quantity":3,"unitPrice":10.5}}'
STANDS = f'{{"productId":"{STAND}","quantity":1,"unitPrice":1}}'
# (meaning, body): bodies with one meaning differ only in spelling, key order and whitespace
SPELLINGS = [
    (0, f'{{"customerId":"{CUSTOMER}","items":[{MICE}]}}'),
    (
        0,
        f'{{ "items": [ {{"unitPrice": 10.50, "quantity": 2, "productId": "{MOUSE.upper()}"}} ],'
        f' "currency": "EUR", "customerId": "{CUSTOMER}" }}',
    ),
    (1, f'{{"customerId":"{CUSTOMER}","items":[{MORE_MICE}]}}'),
    (2, f'{{"customerId":"{CUSTOMER}","currency":"USD","items":[{MICE}]}}'),
    (3, f'{{"customerId":"{CUSTOMER}","items":[{STANDS},{MICE}]}}'),
]
calls = st.lists(
    st.tuples(st.sampled_from("abcd"), st.integers(0, len(SPELLINGS) - 1)), min_size=1, max_size=25
)


async def place_all(sequence: list[tuple[str, int]]) -> None:
    clock = ManualClock()
    db = MemoryOrderDatabase(clock)
    service = OrderService(db.unit_of_work, clock)
    first: dict[str, tuple[int, Any]] = {}
    for key, spelling in sequence:
        meaning, body = SPELLINGS[spelling]
        outcome = await service.place_order(PlaceOrder.model_validate_json(body), key)
        if key not in first:
            assert (outcome.kind, outcome.status_code) == ("created", 201)
            first[key] = (meaning, outcome.body)
        elif first[key][0] == meaning:
            assert (outcome.kind, outcome.status_code) == ("replayed", 200)
            assert outcome.body == first[key][1]
        else:
            assert (outcome.kind, outcome.status_code) == ("conflict", 409)
    assert len(db.orders.rows) == len(first)
    assert {body["id"] for _, body in first.values()} == {str(i) for i in db.orders.rows}
    assert len(db.outbox.rows) == len(first)


@settings(max_examples=200, deadline=None)
@given(calls)
def test_one_order_per_key_replay_when_equal_conflict_when_not(
    sequence: list[tuple[str, int]],
) -> None:
    asyncio.run(place_all(sequence))

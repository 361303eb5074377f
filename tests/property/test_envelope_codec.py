"""Any valid event survives encode → decode unchanged; no input makes decode crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from core_saga.messages import (
    EVENT_TYPES,
    MAX_AMOUNT,
    Envelope,
    Event,
    LineItem,
    PoisonMessage,
    decode,
    encode,
)
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.property

money = st.decimals(min_value=0, max_value=MAX_AMOUNT - Decimal("0.01"), places=2)
line_items = st.fixed_dictionaries(
    {"product_id": st.uuids(), "quantity": st.integers(1, 10_000), "unit_price": money}
).map(lambda fields: LineItem(**fields))  # not st.builds: it would also fill the camelCase aliases
instants = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "order_id": st.uuids(),
    "customer_id": st.uuids(),
    "payment_id": st.uuids(),
    "items": st.lists(line_items, min_size=1, max_size=5).map(tuple),
    "total_amount": money,
    "amount": money,
    "currency": st.from_regex(r"\A[A-Z]{3}\Z"),
    "reason": st.text(max_size=50),
}


def events_of(event_class: type[Event]) -> st.SearchStrategy[Event]:
    fields = {
        name: FIELD_VALUES[name] if field.is_required() else st.none() | FIELD_VALUES[name]
        for name, field in event_class.model_fields.items()
    }
    return st.fixed_dictionaries(fields).map(lambda values: event_class(**values))


events = st.sampled_from(sorted(EVENT_TYPES)).flatmap(lambda name: events_of(EVENT_TYPES[name]))
envelopes = st.fixed_dictionaries(
    {
        "event_id": st.uuids(),
        "occurred_at": instants,
        "correlation_id": st.uuids(),
        "causation_id": st.one_of(st.none(), st.uuids()),
        "payload": events,
    }
).map(lambda fields: Envelope(**fields))


@given(envelopes)
def test_every_valid_envelope_round_trips(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


@given(envelopes)
def test_epoch_seconds_decode_to_the_same_instant(envelope: Envelope) -> None:
    since = envelope.occurred_at - datetime(1970, 1, 1, tzinfo=UTC)
    seconds = since.days * 86_400 + since.seconds + Decimal(since.microseconds) / 1_000_000
    wire = {**envelope.to_dict(), "occurredAt": "SECONDS"}
    decoded = decode(json.dumps(wire).replace('"SECONDS"', str(seconds)))
    assert decoded == envelope


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


POISON_KINDS = {kind.kind for kind in PoisonMessage.__subclasses__()}


def outcome_of(raw: bytes) -> str:
    """ "decoded", or the poison's kind; any other exception fails the test."""
    try:
        decode(raw)
    except PoisonMessage as poison:
        return poison.kind if poison.reason else "poison that does not say why"
    return "decoded"


@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_poison_or_an_envelope(raw: bytes) -> None:
    assert outcome_of(raw) in {"decoded", *POISON_KINDS}


@given(envelopes, st.sampled_from(["payload", "occurredAt", "eventId", "version"]), json_values)
def test_a_mangled_field_is_poison_or_still_valid(envelope: Envelope, key: str, value: Any) -> None:
    wire = envelope.to_dict()
    wire[key] = value
    assert outcome_of(json.dumps(wire).encode()) in {"decoded", *POISON_KINDS}

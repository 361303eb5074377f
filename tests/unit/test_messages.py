"""The wire contract: every seed vector parses and round-trips, every poison is typed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from core_saga.messages import (
    EVENT_TYPES,
    TOPIC_OF,
    Envelope,
    InvalidEvent,
    OrderCancelled,
    OrderCreated,
    PaymentSucceeded,
    PoisonMessage,
    StockReleaseRequested,
    UndecodableMessage,
    UnsupportedVersion,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

POISON_KINDS = {
    "bad-uuid.json": "invalid-event",
    "future-version.json": "unsupported-version",
    "json-array.json": "undecodable",
    "missing-payload.json": "invalid-event",
    "negative-quantity.json": "invalid-event",
    "not-utf8.bin": "undecodable",
    "payload-is-list.json": "invalid-event",
    "truncated.json": "undecodable",
    "unknown-event-type.json": "unknown-event-type",
}


def seed_files(contract_dir: Path) -> list[Path]:
    files = sorted((contract_dir / "seed-events").glob("*.json"))
    assert len(files) >= 9, f"expected the seed's event vectors in {contract_dir}"
    return files


def test_every_seed_event_parses_as_its_type(contract_dir: Path) -> None:
    for path in seed_files(contract_dir):
        envelope = decode(path.read_bytes())
        assert envelope.event_type == path.stem, path.name
        assert isinstance(envelope.payload, EVENT_TYPES[path.stem]), path.name
        assert envelope.occurred_at.tzinfo is not None, path.name


def test_every_seed_event_round_trips(contract_dir: Path) -> None:
    for path in seed_files(contract_dir):
        envelope = decode(path.read_bytes())
        assert decode(encode(envelope)) == envelope, path.name
        raw = json.loads(path.read_text(), parse_float=Decimal)
        ours = json.loads(encode(envelope), parse_float=Decimal)
        assert {k: ours["payload"].get(k) for k in raw["payload"]} == raw["payload"], path.name


def test_seed_epoch_seconds_and_money_are_exact(contract_dir: Path) -> None:
    created = decode((contract_dir / "seed-events" / "OrderCreated.json").read_bytes())
    assert created.occurred_at == datetime(2024, 11, 24, 0, 0, 0, 123456, tzinfo=UTC)
    assert isinstance(created.payload, OrderCreated)
    assert created.payload.items[0].unit_price == Decimal("29.99")
    assert created.payload.total_amount == sum(
        (item.unit_price * item.quantity for item in created.payload.items), Decimal(0)
    )


def test_the_seed_omits_customer_id_and_we_accept_that(contract_dir: Path) -> None:
    cancelled = decode((contract_dir / "seed-events" / "OrderCancelled.json").read_bytes())
    assert isinstance(cancelled.payload, OrderCancelled)
    assert cancelled.payload.customer_id is None
    assert cancelled.payload.reason == "Payment declined by provider"


def test_every_poison_vector_is_rejected_with_a_typed_reason(contract_dir: Path) -> None:
    files = sorted((contract_dir / "poison").iterdir())
    assert len(files) >= len(POISON_KINDS)
    for path in files:
        with pytest.raises(PoisonMessage) as caught:
            decode(path.read_bytes())
        assert caught.value.reason, path.name
        if path.name in POISON_KINDS:
            assert caught.value.kind == POISON_KINDS[path.name], (path.name, caught.value)


def envelope_text(occurred_at: str = '"2026-01-01T00:00:00Z"', amount: str = "12.5") -> str:
    order_id = uuid4()
    return (
        f'{{"eventId":"{uuid4()}","eventType":"PaymentSucceeded","occurredAt":{occurred_at},'
        f'"correlationId":"{order_id}","causationId":null,"version":1,'
        f'"payload":{{"orderId":"{order_id}","paymentId":"{uuid4()}","amount":{amount},'
        f'"extra":"ignored"}}}}'
    )


def test_unknown_payload_fields_are_ignored_and_null_causation_is_accepted() -> None:
    envelope = decode(envelope_text())
    assert isinstance(envelope.payload, PaymentSucceeded)
    assert envelope.payload.amount == Decimal("12.5")
    assert envelope.causation_id is None


@pytest.mark.parametrize(
    "occurred_at",
    [
        "1e20",
        "1e999999999",
        "Infinity",
        "NaN",
        "99999999999999999999",
        "true",
        '"9999-12-31T23:59:59-01:00"',  # in UTC, year 10 000
        '"0001-01-01T00:00:00+01:00"',  # in UTC, year 0
    ],
)
def test_impossible_instants_are_invalid_events_not_crashes(occurred_at: str) -> None:
    with pytest.raises(InvalidEvent, match="occurredAt"):
        decode(envelope_text(occurred_at=occurred_at))


def test_negative_epoch_seconds_keep_their_fraction() -> None:
    envelope = decode(envelope_text(occurred_at="-1.5"))
    assert envelope.occurred_at == datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC)


def release_text(quantity: str) -> str:
    """A ``StockReleaseRequested`` whose one line holds ``quantity`` as written."""
    order_id = uuid4()
    line = f'{{"productId":"{uuid4()}","quantity":{quantity},"unitPrice":10}}'
    return (
        f'{{"eventId":"{uuid4()}","eventType":"StockReleaseRequested",'
        f'"occurredAt":"2026-01-01T00:00:00Z","correlationId":"{order_id}","version":1,'
        f'"payload":{{"orderId":"{order_id}","items":[{line}]}}}}'
    )


@pytest.mark.parametrize("quantity", ["1e999999999", "-1e999999999", "1e-999999999", "1e5000000"])
def test_a_quantity_with_a_huge_exponent_is_poison_at_once(quantity: str) -> None:
    """Expanded, ``1e999999999`` is a billion-digit int: the consumer stalled on it instead
    of dead-lettering it."""
    with pytest.raises(InvalidEvent, match=r"items\.0\.quantity: Value error, must be a whole"):
        decode(release_text(quantity))


@pytest.mark.parametrize(("quantity", "count"), [("2.0", 2), ("2.000", 2), ("1e1", 10)])
def test_a_whole_quantity_with_a_point_or_an_exponent_is_read(quantity: str, count: int) -> None:
    envelope = decode(release_text(quantity))
    assert isinstance(envelope.payload, StockReleaseRequested)
    assert envelope.payload.items[0].quantity == count
    assert type(envelope.payload.items[0].quantity) is int


def test_a_version_with_a_huge_exponent_is_unsupported_at_once() -> None:
    with pytest.raises(UnsupportedVersion):
        decode(release_text("1").replace('"version":1', '"version":1e999999999'))


@pytest.mark.parametrize("amount", ["1.001", "-1", "1e12", "NaN"])
def test_money_out_of_contract_is_invalid(amount: str) -> None:
    with pytest.raises(InvalidEvent, match="amount"):
        decode(envelope_text(amount=amount))


@pytest.mark.parametrize(
    ("amount", "exact"), [("99.480", "99.48"), ("10.000", "10.00"), ("0.0000", "0.00")]
)
def test_money_with_trailing_zeros_is_the_same_amount_in_two_places(
    amount: str, exact: str
) -> None:
    """A Java ``BigDecimal`` of scale 3 (``99.480``) is valid money, not poison."""
    envelope = decode(envelope_text(amount=amount))
    assert isinstance(envelope.payload, PaymentSucceeded)
    assert envelope.payload.amount == Decimal(exact)
    assert envelope.payload.amount.as_tuple() == Decimal(exact).as_tuple()
    assert decode(encode(envelope)) == envelope


def test_deeply_nested_json_is_undecodable() -> None:
    with pytest.raises(UndecodableMessage):
        decode("[" * 100_000)


def test_an_integer_past_pythons_4300_digits_is_undecodable() -> None:
    with pytest.raises(UndecodableMessage, match="4300 digits"):
        decode(envelope_text(amount="9" * 5_000))


def test_money_is_written_as_an_exact_json_number() -> None:
    order_id = uuid4()
    payment = PaymentSucceeded(order_id=order_id, payment_id=uuid4(), amount=Decimal("0.30"))
    envelope = Envelope(
        event_id=uuid4(),
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        correlation_id=order_id,
        payload=payment,
    )
    assert b'"amount":0.3' in encode(envelope)
    assert b'"occurredAt":"2026-01-01T00:00:00.000000Z"' in encode(envelope)
    assert envelope.topic == TOPIC_OF["PaymentSucceeded"] == "payment-events"
    assert envelope.key == str(order_id)
    assert UUID(envelope.to_dict()["correlationId"]) == order_id

"""The wire contract: the event envelope, the ten saga events, and their JSON codec.

Field and event-type names match the seed's Java platform so either side reads the other's
events. Money is ``Decimal`` end to end: JSON numbers are parsed straight into ``Decimal``.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

ENVELOPE_VERSION: Final = 1
ORDER_TOPIC: Final = "order-events"
INVENTORY_TOPIC: Final = "inventory-events"
PAYMENT_TOPIC: Final = "payment-events"
SAGA_TOPICS: Final = (ORDER_TOPIC, INVENTORY_TOPIC, PAYMENT_TOPIC)
MAX_AMOUNT: Final = Decimal("1000000000000")  # keeps every amount exact as a JSON number


def dead_letter_topic(topic: str) -> str:
    """Where poison from ``topic`` goes."""
    return f"{topic}.DLT"


def is_dead_letter_topic(topic: str) -> bool:
    return topic.endswith(dead_letter_topic(""))


def _two_places(value: Decimal) -> Decimal:
    """Refuse a third decimal place, not trailing zeros.

    ``99.480`` (a Java ``BigDecimal`` of scale 3) is the amount 99.48: kept, as ``99.48``.
    """
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):  # NaN or infinity
        raise ValueError("money has at most 2 decimal places")
    excess = -2 - exponent  # how many digits stand past the second place
    if excess <= 0:
        return value
    if any(digits[-excess:]):
        raise ValueError("money has at most 2 decimal places")
    return Decimal((sign, digits[:-excess] or (0,), -2))  # exact: no context, no rounding


def _json_number(value: Any) -> Any:
    """Refuse what lax validation would coerce: ``true`` as 1, the string ``"1.5"`` as 1.5."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number, not a string or a boolean")
    return value


MAX_WHOLE_EXPONENT: Final = 18
"""A whole number past ``10**19`` is refused unexpanded: no int field allows one that large."""


def _whole_number(value: Any) -> Any:
    """Turn a ``Decimal`` bound for an int field into an int here, cheaply, or refuse it.

    JSON numbers with a point or an exponent arrive as ``Decimal``; pydantic would expand
    ``1e999999999`` to a billion digits (``1e-999999999`` to a billion-digit denominator)
    before ``le`` refused it, stalling the event loop or a consumer for as long.
    """
    if not isinstance(value, Decimal):
        return value
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value and value.adjusted() > MAX_WHOLE_EXPONENT:
        raise ValueError(f"must be a whole number of at most {MAX_WHOLE_EXPONENT + 1} digits")
    if value != value.to_integral_value():
        raise ValueError("must be a whole number, got a number with a fractional part")
    return int(value)  # ``2.0`` stays the 2 it always was


def _money_to_json(value: Decimal) -> float | int:
    # Written as a JSON number, as the seed writes it; below MAX_AMOUNT with at most two
    # places the shortest float repr is exactly the decimal, so nothing is rounded.
    return int(value) if value == value.to_integral_value() else float(value)


Money = Annotated[
    Decimal,
    Field(ge=0, lt=MAX_AMOUNT),
    AfterValidator(_two_places),
    PlainSerializer(_money_to_json, when_used="json"),
]
"""An amount of money: ``Decimal``, at least 0, at most two places, a JSON number on the wire."""

MIN_PRICE: Final = Decimal("0.01")

Price = Annotated[
    Decimal,
    Field(ge=MIN_PRICE, lt=MAX_AMOUNT),
    BeforeValidator(_json_number),
    AfterValidator(_two_places),
    PlainSerializer(_money_to_json, when_used="json"),
    # pydantic would also offer a string form, which ``_json_number`` refuses.
    WithJsonSchema(
        {
            "type": "number",
            "minimum": float(MIN_PRICE),
            "exclusiveMaximum": float(MAX_AMOUNT),
            "description": "at most 2 decimal places",
        },
        mode="validation",
    ),
]
"""A unit price a customer may order at: a JSON number like ``Money``, at least 0.01 (DESIGN §5)."""

Count = Annotated[int, Field(ge=1, le=10_000), BeforeValidator(_whole_number)]
"""How many of a product an event's line holds."""

Quantity = Annotated[Count, BeforeValidator(_json_number)]
"""How many of a product a customer may order: a JSON number, never ``true`` or ``"2"``."""


def _parse_instant(value: Any) -> Any:
    """Accept ISO-8601 or epoch seconds (the Java mapper writes numbers)."""
    if isinstance(value, bool):
        raise ValueError("occurredAt is not a timestamp")
    if isinstance(value, int | float | Decimal):
        seconds = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        if not seconds.is_finite():
            raise ValueError("occurredAt is not a finite number")
        if seconds and seconds.adjusted() > MAX_WHOLE_EXPONENT:  # ``floor`` would expand it
            raise ValueError("occurredAt is out of range: too many seconds")
        whole = math.floor(seconds)
        micros = int((seconds - whole) * 1_000_000)
        try:
            return datetime.fromtimestamp(whole, UTC).replace(microsecond=micros)
        except (OverflowError, OSError) as exc:  # not ValueError: pydantic would not catch it
            raise ValueError(f"occurredAt is out of range: {exc}") from exc
    return value


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # 9999-12-31T23:59-01:00 is in year 10 000; pydantic
        # turns a ValueError into a validation error, but lets an OverflowError escape
        raise ValueError(f"occurredAt is out of range: {exc}") from exc


def format_instant(value: datetime) -> str:
    """ISO-8601 in UTC with microseconds and a ``Z``: exact and sortable."""
    return _aware_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Instant = Annotated[
    datetime,
    BeforeValidator(_parse_instant),
    AfterValidator(_aware_utc),
    PlainSerializer(format_instant, when_used="json"),
]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )


class LineItem(WireModel):
    product_id: UUID
    quantity: Count
    unit_price: Money


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class Event(WireModel):
    """A saga event's payload; ``event_type`` names it on the wire."""

    event_type: ClassVar[str]
    order_id: UUID


class OrderCreated(Event):
    event_type: ClassVar[str] = "OrderCreated"
    customer_id: UUID
    items: tuple[LineItem, ...] = Field(min_length=1, max_length=100)
    total_amount: Money
    currency: Currency


class OrderConfirmed(Event):
    event_type: ClassVar[str] = "OrderConfirmed"
    customer_id: UUID | None = None


class OrderCancelled(Event):
    event_type: ClassVar[str] = "OrderCancelled"
    customer_id: UUID | None = None
    reason: str


class StockReleaseRequested(Event):
    event_type: ClassVar[str] = "StockReleaseRequested"
    items: tuple[LineItem, ...]


class StockReserved(Event):
    event_type: ClassVar[str] = "StockReserved"
    items: tuple[LineItem, ...]
    total_amount: Money
    currency: Currency


class StockRejected(Event):
    event_type: ClassVar[str] = "StockRejected"
    reason: str


class StockReleased(Event):
    event_type: ClassVar[str] = "StockReleased"


class PaymentSucceeded(Event):
    event_type: ClassVar[str] = "PaymentSucceeded"
    payment_id: UUID
    amount: Money


class PaymentFailed(Event):
    event_type: ClassVar[str] = "PaymentFailed"
    amount: Money
    reason: str


class PaymentRefunded(Event):
    event_type: ClassVar[str] = "PaymentRefunded"
    payment_id: UUID
    amount: Money


EVENT_TYPES: Final[Mapping[str, type[Event]]] = {
    cls.event_type: cls
    for cls in (
        OrderCreated,
        OrderConfirmed,
        OrderCancelled,
        StockReleaseRequested,
        StockReserved,
        StockRejected,
        StockReleased,
        PaymentSucceeded,
        PaymentFailed,
        PaymentRefunded,
    )
}

TOPIC_OF: Final[Mapping[str, str]] = {
    "OrderCreated": ORDER_TOPIC,
    "OrderConfirmed": ORDER_TOPIC,
    "OrderCancelled": ORDER_TOPIC,
    "StockReleaseRequested": ORDER_TOPIC,
    "StockReserved": INVENTORY_TOPIC,
    "StockRejected": INVENTORY_TOPIC,
    "StockReleased": INVENTORY_TOPIC,
    "PaymentSucceeded": PAYMENT_TOPIC,
    "PaymentFailed": PAYMENT_TOPIC,
    "PaymentRefunded": PAYMENT_TOPIC,
}


class _EnvelopeFields(WireModel):
    event_id: UUID
    event_type: str
    occurred_at: Instant
    correlation_id: UUID
    causation_id: UUID | None = None
    version: Literal[1]
    payload: dict[str, Any]


class Envelope(WireModel):
    """One event as it travels: identity, causality and the typed payload."""

    event_id: UUID
    occurred_at: Instant
    correlation_id: UUID
    causation_id: UUID | None = None
    version: int = ENVELOPE_VERSION
    payload: Event

    @property
    def event_type(self) -> str:
        return self.payload.event_type

    @property
    def topic(self) -> str:
        return TOPIC_OF[self.event_type]

    @property
    def key(self) -> str:
        """The Kafka key: the order id, so one order's events stay in order in a topic."""
        return str(self.payload.order_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready wire form (camelCase, ISO timestamps, numeric money)."""
        return {
            "eventId": str(self.event_id),
            "eventType": self.event_type,
            "occurredAt": format_instant(self.occurred_at),
            "correlationId": str(self.correlation_id),
            "causationId": None if self.causation_id is None else str(self.causation_id),
            "version": self.version,
            "payload": self.payload.model_dump(mode="json", by_alias=True),
        }


class PoisonMessage(Exception):
    """A message no retry can fix; it belongs on the dead-letter topic with ``reason``."""

    kind: ClassVar[str] = "poison"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UndecodableMessage(PoisonMessage):
    kind: ClassVar[str] = "undecodable"


class UnknownEventType(PoisonMessage):
    kind: ClassVar[str] = "unknown-event-type"


class UnsupportedVersion(PoisonMessage):
    kind: ClassVar[str] = "unsupported-version"


class InvalidEvent(PoisonMessage):
    kind: ClassVar[str] = "invalid-event"


_SHORT = reprlib.Repr()  # Python 3.11 takes no limits as arguments
_SHORT.maxstring = _SHORT.maxother = 80


def _short(value: object) -> str:
    """A value from a record, fit for an error: a poison record's strings are unbounded."""
    return _SHORT.repr(value)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "value"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def decode(raw: bytes | str) -> Envelope:
    """Parse one message value; raise a ``PoisonMessage`` subclass naming what is wrong."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text, parse_float=Decimal)
    except UnicodeDecodeError as exc:
        raise UndecodableMessage(f"value is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise UndecodableMessage(f"value is not JSON: {exc.msg} at {exc.pos}") from exc
    except ValueError as exc:  # an integer of over 4,300 digits: ``int`` refuses it
        raise UndecodableMessage(f"value is not JSON this reader accepts: {exc}") from exc
    except RecursionError as exc:
        raise UndecodableMessage("value is nested too deeply") from exc
    return from_dict(data)


_JSON_KINDS: Final = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    Decimal: "number",
    bool: "boolean",
    type(None): "null",
}


def from_dict(data: object) -> Envelope:
    """Validate an already-parsed wire form (see ``decode``)."""
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), type(data).__name__)
        raise UndecodableMessage(f"envelope is a JSON {kind}, not an object")
    event_type = data.get("eventType")
    event_class = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if event_class is None:
        raise UnknownEventType(f"unknown eventType {_short(event_type)}")
    version = data.get("version")
    if version != ENVELOPE_VERSION:
        raise UnsupportedVersion(f"unsupported envelope version {_short(version)}")
    try:
        fields = _EnvelopeFields.model_validate(data)
        payload = event_class.model_validate(fields.payload)
    except ValidationError as exc:
        raise InvalidEvent(f"invalid {event_type}: {_describe(exc)}") from exc
    return Envelope(
        event_id=fields.event_id,
        occurred_at=fields.occurred_at,
        correlation_id=fields.correlation_id,
        causation_id=fields.causation_id,
        version=fields.version,
        payload=payload,
    )


def encode(envelope: Envelope) -> bytes:
    """The message value: compact UTF-8 JSON."""
    return json.dumps(envelope.to_dict(), separators=(",", ":")).encode()

"""Hostile records the poison vectors leave out: each is dead-lettered with its reason, or
applied when it is a valid event, and the partition moves on past all of them."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import pytest
from adapters_kafka import headers as h
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from core_saga.messages import EVENT_TYPES

from tests.integration.kafka.conftest import RunnerFactory
from tests.integration.kafka.support import (
    InboxHandler,
    Probe,
    committed_offset,
    eventually,
    read_topic,
    topic_size,
)

pytestmark = pytest.mark.integration

ORDER_ID = uuid4()
KEY = str(ORDER_ID).encode()
MEGABYTE = 1_000_000


class InboxHandlerButStockReleased(InboxHandler):
    """A service's handler: an inbox, and one event type it leaves to other services."""

    subscriptions = frozenset(EVENT_TYPES) - {"StockReleased"}


def envelope(**fields: Any) -> dict[str, Any]:
    """A valid OrderConfirmed for ORDER_ID as the seed writes it, with ``fields`` replaced."""
    return {
        "eventId": str(uuid4()),
        "eventType": "OrderConfirmed",
        "occurredAt": "2026-01-01T00:00:00.123Z",
        "correlationId": str(ORDER_ID),
        "causationId": None,
        "version": 1,
        "payload": {"orderId": str(ORDER_ID), "customerId": str(uuid4())},
        **fields,
    }


def as_value(document: object) -> bytes:
    return json.dumps(document).encode()


def padded(size: int, **fields: Any) -> bytes:
    """An envelope about ``size`` bytes long: its payload carries a huge unknown field."""
    document = envelope(**fields)
    document["payload"] = {**document["payload"], "note": "x" * size}
    return as_value(document)


@dataclass
class Hostile:
    """One record to send; ``reason`` is the DLT reason's start, or None if it is applied."""

    name: str
    value: bytes | None
    reason: str | None
    key: bytes | None = KEY
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    skipped: bool = False  # a type this group leaves to others: neither applied nor DLT'd

    @property
    def event_id(self) -> UUID:
        assert self.value is not None
        return UUID(json.loads(self.value)["eventId"])


def hostile_records() -> list[Hostile]:
    valid = envelope()
    twin = {**envelope(), "eventId": valid["eventId"]}  # same id, another customer
    out_of_range = "invalid OrderConfirmed: occurredAt: Value error, occurredAt is out of range"
    return [
        Hostile("tombstone", None, "value is empty"),
        Hostile("tombstone without a key", None, "value is empty", key=None),
        Hostile("empty value", b"", "value is not JSON: Expecting value at 0"),
        Hostile("JSON list", as_value([envelope()]), "envelope is a JSON array, not an object"),
        Hostile("JSON number", b"42", "envelope is a JSON number, not an object"),
        Hostile("JSON null", b"null", "envelope is a JSON null, not an object"),
        Hostile("deep nesting", b"[" * 100_000, "value is nested too deeply"),
        Hostile(
            "deep nesting, typed header",
            b"[" * 100_000,
            "value is nested too deeply",
            headers=[(h.EVENT_TYPE, b"OrderConfirmed")],
        ),
        Hostile(
            "integer past 4,300 digits",
            b'{"eventType": "OrderConfirmed", "version": ' + b"9" * 5_000 + b"}",
            "value is not JSON this reader accepts: Exceeds the limit (4300 digits)",
        ),
        Hostile(
            "year 9999 west of UTC",
            as_value(envelope(occurredAt="9999-12-31T23:59:59-01:00")),
            out_of_range,
        ),
        Hostile(
            "year 1 east of UTC",
            as_value(envelope(occurredAt="0001-01-01T00:00:00+01:00")),
            out_of_range,
        ),
        Hostile(
            "occurredAt not a date",
            as_value(envelope(occurredAt="yesterday")),
            "invalid OrderConfirmed: occurredAt: Input should be a valid datetime",
        ),
        Hostile(
            "epoch seconds before year 1",
            as_value(envelope(occurredAt=-(10**12))),
            "invalid OrderConfirmed: occurredAt: Value error, year -29719 is out of range",
        ),
        Hostile("version 2", as_value(envelope(version=2)), "unsupported envelope version 2"),
        Hostile(
            "another type's payload",
            as_value(envelope(eventType="OrderCreated")),
            "invalid OrderCreated: items: Field required; totalAmount: Field required",
        ),
        Hostile(
            "huge unknown eventType",
            as_value(envelope(eventType="X" * MEGABYTE)),
            "unknown eventType 'XXXX",
        ),
        Hostile("1 MB, invalid", padded(MEGABYTE, version=2), "unsupported envelope version 2"),
        Hostile(
            "header disagrees with the envelope",
            as_value(envelope()),
            "eventType header 'OrderCreated' disagrees with the envelope's 'OrderConfirmed'",
            headers=[(h.EVENT_TYPE, b"OrderCreated")],
        ),
        Hostile(
            "header not UTF-8",
            as_value(envelope()),
            "eventType header '\ufffd\ufffd' disagrees with the envelope's 'OrderConfirmed'",
            headers=[(h.EVENT_TYPE, b"\xff\xfe")],
        ),
        Hostile(
            "header not UTF-8, value poison",
            b"[]",
            "envelope is a JSON array, not an object",
            headers=[(h.EVENT_TYPE, b"\xff\xfe"), ("traceparent", b"\xc3\x28")],
        ),
        Hostile(
            "header without a value, value poison",
            b"{}",
            "unknown eventType None",
            headers=[(h.EVENT_TYPE, None), ("traceparent", None)],
        ),
        Hostile(
            "header claims a type left to others",
            as_value(envelope()),
            None,
            headers=[(h.EVENT_TYPE, b"StockReleased")],
            skipped=True,
        ),
        # Valid events: applied, hostile as their surroundings may be.
        Hostile("valid", as_value(valid), None, headers=[(h.EVENT_TYPE, b"OrderConfirmed")]),
        Hostile("same eventId, other payload", as_value(twin), None),  # the inbox skips it
        Hostile(
            "duplicated headers",
            as_value(envelope()),
            None,
            headers=[
                (h.EVENT_TYPE, b"OrderConfirmed"),
                (h.EVENT_TYPE, b"OrderConfirmed"),
                (h.EVENT_ID, b"one"),
                (h.EVENT_ID, b"two"),
            ],
        ),
        Hostile(
            "header without a value", as_value(envelope()), None, headers=[(h.EVENT_TYPE, None)]
        ),
        Hostile("1 MB, valid", padded(MEGABYTE), None),
        Hostile("year 9999", as_value(envelope(occurredAt="9999-12-31T23:59:59Z")), None),
        Hostile("before 1970", as_value(envelope(occurredAt="1969-07-20T20:17:40Z")), None),
        Hostile("negative epoch seconds", as_value(envelope(occurredAt=-1.5)), None),
        Hostile("the last one", as_value(envelope()), None),
    ]


async def test_hostile_records_are_dead_lettered_or_applied_and_the_partition_moves_on(
    kafka_settings: KafkaSettings,
    kafka_publisher: KafkaPublisher,
    new_topic: Callable[..., Awaitable[str]],
    start_runner: RunnerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = await new_topic("hostile", partitions=1)  # one partition: offsets in send order
    records = hostile_records()
    probe = Probe()
    handler = InboxHandlerButStockReleased(probe)
    runner = await start_runner(handler, topic)

    for record in records:  # headers with a None value on purpose: aiokafka sends them
        raw: Any = record.headers
        await kafka_publisher.send(topic, record.value, key=record.key, headers=raw)

    applied = [r for r in records if r.reason is None and not r.skipped]
    expected = list(dict.fromkeys(r.event_id for r in applied))  # the twin only once
    last = records[-1].event_id
    await probe.wait_for(lambda: handler.deliveries[last] == 1, "the last record", within=20)
    assert handler.applied[str(ORDER_ID)] == expected
    twin = next(r for r in records if r.name == "same eventId, other payload")
    assert handler.deliveries[twin.event_id] == 2  # delivered twice, applied once

    poison = {offset: r for offset, r in enumerate(records) if r.reason is not None}
    letters = await read_topic(kafka_settings, f"{topic}.DLT", len(poison))
    assert len(letters) == len(poison)
    for letter in letters:
        headers = h.decode_headers(letter.headers)
        offset = int(headers[h.DLT_ORIGINAL_OFFSET])
        record = poison.pop(offset)
        assert (letter.key, letter.value) == (record.key, record.value), record.name
        assert list(letter.headers)[: len(record.headers)] == record.headers, record.name
        assert headers[h.DLT_ERROR_MESSAGE].startswith(record.reason or "-"), record.name
        assert headers[h.DLT_ATTEMPTS] == "1", record.name
    assert not poison, [r.name for r in poison.values()]
    assert await topic_size(kafka_settings, f"{topic}.DLT") == len(letters)  # none skipped

    async def all_committed() -> bool:
        return await committed_offset(kafka_settings, runner.group_id, topic, 0) == len(records)

    await eventually(all_committed, f"the group to commit past all {len(records)} records")
    assert runner.ready
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert not crashes, crashes[0].getMessage()
    # a record's text in its error is bounded, in the log too: a megabyte eventType once
    # made a megabyte ERROR line in every group that consumed it
    longest = max(len(r.getMessage()) for r in caplog.records if "dead-lettered" in r.getMessage())
    assert longest < 3_000

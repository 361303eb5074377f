"""Kafka header names and codecs: text on our side, bytes on the wire."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

RawHeaders = list[tuple[str, bytes]]

EVENT_TYPE: Final = "eventType"
EVENT_ID: Final = "eventId"

# Added to a dead-lettered record, beside its original headers.
DLT_PREFIX: Final = "dlt-"
DLT_ORIGINAL_TOPIC: Final = "dlt-original-topic"
DLT_ORIGINAL_PARTITION: Final = "dlt-original-partition"
DLT_ORIGINAL_OFFSET: Final = "dlt-original-offset"
DLT_CONSUMER_GROUP: Final = "dlt-consumer-group"
DLT_ERROR_TYPE: Final = "dlt-error-type"
DLT_ERROR_MESSAGE: Final = "dlt-error-message"
DLT_ATTEMPTS: Final = "dlt-attempts"
DLT_FIRST_FAILURE_AT: Final = "dlt-first-failure-at"
DLT_VALUE_DROPPED: Final = "dlt-value-dropped"  # the value's size, when the broker refused it


def encode_headers(headers: Mapping[str, str]) -> RawHeaders:
    """Text headers as aiokafka sends them."""
    return [(name, value.encode()) for name, value in headers.items()]


def decode_headers(raw: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Wire headers as text; a repeated name keeps its last value, bad UTF-8 is replaced."""
    return {
        name: value.decode("utf-8", "replace") if value is not None else ""
        for name, value in raw or ()
    }


def without_dead_letter_headers(raw: Iterable[tuple[str, bytes]] | None) -> RawHeaders:
    """The original headers of a record, minus those a previous dead-lettering added."""
    return [(name, value) for name, value in raw or () if not name.startswith(DLT_PREFIX)]


def error_type(error: BaseException) -> str:
    """The ``dlt-error-type`` of ``error`` (module and qualified name), also the dead-letter
    span's ``error.type``."""
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"

"""Reading a dead-letter topic and replaying its records to the topic they came from."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from core_saga.messages import dead_letter_topic, is_dead_letter_topic

from adapters_kafka.consumer import DEFAULT_CONSUMER_OPTIONS
from adapters_kafka.headers import (
    DLT_ATTEMPTS,
    DLT_CONSUMER_GROUP,
    DLT_ERROR_MESSAGE,
    DLT_ERROR_TYPE,
    DLT_ORIGINAL_OFFSET,
    DLT_ORIGINAL_PARTITION,
    DLT_ORIGINAL_TOPIC,
    DLT_VALUE_DROPPED,
    EVENT_ID,
    EVENT_TYPE,
    decode_headers,
    without_dead_letter_headers,
)
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered record with the reason the consumer gave up on it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    raw_headers: list[tuple[str, bytes]]

    @cached_property
    def headers(self) -> dict[str, str]:
        return decode_headers(self.raw_headers)

    @property
    def event_id(self) -> str:
        return self.headers.get(EVENT_ID, "")

    @property
    def event_type(self) -> str:
        return self.headers.get(EVENT_TYPE, "")

    @property
    def original_topic(self) -> str:
        return self.headers.get(DLT_ORIGINAL_TOPIC, "")

    @property
    def origin(self) -> str:
        h = self.headers
        return f"{h.get(DLT_ORIGINAL_PARTITION, '?')}@{h.get(DLT_ORIGINAL_OFFSET, '?')}"

    @property
    def error(self) -> str:
        h = self.headers
        return f"{h.get(DLT_ERROR_TYPE, '?')}: {h.get(DLT_ERROR_MESSAGE, '')}"

    @property
    def attempts(self) -> str:
        return self.headers.get(DLT_ATTEMPTS, "")

    @property
    def group(self) -> str:
        """The consumer group that gave up: each group that did dead-letters its own copy."""
        return self.headers.get(DLT_CONSUMER_GROUP, "")


class NoSuchTopic(LookupError):
    """The broker has no topic of that name (its name, namespaced, is the argument)."""


def dlt_name(topic: str) -> str:
    """``topic``'s dead-letter topic, whether given the topic or the DLT itself."""
    return topic if is_dead_letter_topic(topic) else dead_letter_topic(topic)


async def read_dead_letters(
    settings: KafkaSettings,
    topic: str,
    *,
    missing_ok: bool = True,
    stall_seconds: float | None = None,
) -> list[DeadLetter]:
    """Every record now on ``topic``'s DLT, read without a consumer group (commits nothing).

    ``topic`` is the saga's name (``order-events``, or its ``.DLT``), in the settings'
    namespace; each letter's ``original_topic`` is the broker's, which ``replay`` sends to.
    A DLT the broker does not have holds no letters, or raises ``NoSuchTopic`` unless
    ``missing_ok``. With ``stall_seconds``, a broker that gives nothing for that long (not
    connecting, or no records while some are left) raises ``TimeoutError``; a long read
    that keeps going is not cut short, as one limit for the whole read would.
    """
    name = settings.named(dlt_name(topic))
    consumer: Any = AIOKafkaConsumer(
        **settings.client_options(), **DEFAULT_CONSUMER_OPTIONS, enable_auto_commit=False
    )
    window = asyncio.timeout(stall_seconds)
    try:
        async with window:
            await consumer.start()
            found = await _partitions(consumer, name)
    except BaseException as exc:
        await consumer.stop()
        if isinstance(exc, TimeoutError) and window.expired():  # ours, not the client's own
            raise TimeoutError(f"no answer in {stall_seconds:g} s") from None
        raise
    try:
        partitions = [TopicPartition(name, p) for p in sorted(found)]
        if not partitions:
            if missing_ok:
                return []
            raise NoSuchTopic(name)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        letters: list[DeadLetter] = []
        remaining = set(partitions)
        loop = asyncio.get_running_loop()
        progress = loop.time()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            if any(batches.values()):
                progress = loop.time()
            elif stall_seconds is not None and loop.time() - progress > stall_seconds:
                raise TimeoutError(f"no records for {stall_seconds:g} s with some left to read")
            for records in batches.values():
                letters.extend(
                    DeadLetter(r.partition, r.offset, r.key, r.value, list(r.headers or ()))
                    for r in records
                )
            # Read up to the high watermark of the last fetch. Not ListOffsets' end: Tansu
            # answers the last record batch's first offset + 1 there, short of the end when
            # that batch holds several records. Every partition, not only those that returned
            # records: one whose last offsets hold none (retention, transaction markers)
            # never returns any.
            for tp in list(remaining):
                end = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) >= end:
                    remaining.discard(tp)
        return sorted(letters, key=lambda letter: (letter.partition, letter.offset))
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    if topic not in await consumer.topics():  # fetches fresh metadata: the DLT may be new
        return set()
    return set(consumer.partitions_for_topic(topic) or ())


def to_replay(letters: Sequence[DeadLetter]) -> list[DeadLetter]:
    """The letters ``replay`` sends, in order: one per original record, none without value.

    A letter that went without its value (``dlt-value-dropped``: too large for the broker)
    is left out: it would arrive as an empty record; its value is at its original offset.
    Each consumer group that gave up on a record dead-lettered its own copy; the record goes
    back once (every group reads it again from the topic), not once per copy, which would
    multiply a record that is still poison by the groups at every replay.
    """
    chosen: list[DeadLetter] = []
    seen: set[tuple[str, str]] = set()
    for letter in letters:
        if not letter.original_topic or DLT_VALUE_DROPPED in letter.headers:
            continue
        if (letter.original_topic, letter.origin) not in seen:
            seen.add((letter.original_topic, letter.origin))
            chosen.append(letter)
    return chosen


async def replay(
    letters: Sequence[DeadLetter],
    publisher: KafkaPublisher,
    *,
    each_within: float | None = None,
    on_sent: Callable[[DeadLetter], None] | None = None,
) -> int:
    """Publish each of ``to_replay(letters)`` again to its original topic, without the
    dead-letter headers, one at a time (each acknowledged, within ``each_within`` seconds
    if given, before the next); return how many. ``on_sent`` is told of each, so a caller
    stopped halfway can say how far it got.

    Safe to repeat: a record that was already applied is a duplicate to the inbox.
    """
    count = 0
    for letter in to_replay(letters):
        await asyncio.wait_for(
            publisher.send(
                letter.original_topic,
                letter.value,
                key=letter.key,
                headers=without_dead_letter_headers(letter.raw_headers),
            ),
            each_within,
        )
        count += 1
        if on_sent is not None:
            on_sent(letter)
    return count

"""What happens to one record: decoded and handled, skipped, retried, or dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from core_saga.messages import (
    EVENT_TYPES,
    SAGA_TOPICS,
    TOPIC_OF,
    Envelope,
    InvalidEvent,
    PoisonMessage,
    UndecodableMessage,
    dead_letter_topic,
    decode,
    format_instant,
)
from core_saga.ports import BatchEventHandler, EventHandler, PublishError

from adapters_kafka import headers as h
from adapters_kafka.policy import ConsumerHooks, InfrastructurePredicate, RetryPolicy, is_transient
from adapters_kafka.publisher import KafkaPublisher

log = logging.getLogger(__name__)

_MAX_ERROR_MESSAGE = 2000
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class Delivery:
    """Brings records to ``handler``; returns once a record may be committed.

    A record may be committed when it was handled, skipped (a type the handler does not
    subscribe to) or dead-lettered. Until then an infrastructure failure keeps it here,
    retried with backoff, while ``outage`` tells the runner it is not ready.
    """

    def __init__(
        self,
        handler: EventHandler,
        publisher: KafkaPublisher,
        *,
        group_id: str,
        retry: RetryPolicy,
        is_infrastructure: InfrastructurePredicate | None,
        hooks: ConsumerHooks,
        now: Callable[[], datetime],
        outage: Callable[[Any], None],
        saga_topic: Callable[[str], str | None] = lambda topic: (
            topic if topic in SAGA_TOPICS else None
        ),
    ) -> None:
        self._handler = handler
        self._saga_topic = saga_topic
        self._publisher = publisher
        self._group_id = group_id
        self._retry = retry
        self._extra_infrastructure = is_infrastructure
        self._hooks = hooks
        self._now = now
        self._outage = outage

    async def deliver_batch(self, records: Sequence[Any]) -> None:
        """Decode consecutive records of one partition and handle them in one transaction.

        Records the handler does not subscribe to are skipped, undecodable ones
        dead-lettered. The rest go to the handler's ``handle_batch`` together; if that
        fails, each is handled on its own, so poison is dead-lettered alone and the rest
        applied.
        """
        admitted = [item for record in records if (item := await self._admit(record))]
        if (
            len(admitted) > 1
            and isinstance(self._handler, BatchEventHandler)
            and await self._handle_together(self._handler, admitted)
        ):
            return
        for item in admitted:
            await self._handle(item)

    async def _admit(self, record: Any) -> _Admitted | None:
        """The record with its envelope if the handler is to apply it; else skip or DLT it."""
        headers = h.decode_headers(record.headers)
        header = headers.get(h.EVENT_TYPE) or None
        if header is not None and self._left_to_others(record.topic, header):
            self._hooks.skipped(record.topic, header)  # not ours: no need to decode it
            return None
        try:
            if record.value is None:
                raise UndecodableMessage("value is empty")
            envelope = decode(record.value)
        except PoisonMessage as exc:
            claimed = header or _event_type_in_json(record.value)
            if self._left_to_others(record.topic, claimed):
                self._hooks.skipped(record.topic, claimed)
            else:  # decoding the same bytes again cannot succeed: no retries
                await self._dead_letter(record, headers, None, exc, 1, self._now())
            return None
        problem: InvalidEvent | None = None
        if header is not None and header != envelope.event_type:
            # Groups route by the header: left as it is, the groups that apply the
            # envelope's type may have skipped it unread.
            problem = InvalidEvent(
                f"eventType header {header!r} disagrees with the envelope's {envelope.event_type!r}"
            )
        elif envelope.event_type not in self._handler.subscriptions:
            if self._left_to_others(record.topic, envelope.event_type):
                self._hooks.skipped(record.topic, envelope.event_type)
                return None
            problem = InvalidEvent(
                f"{envelope.event_type} belongs on {TOPIC_OF[envelope.event_type]}, "
                f"not {self._saga_topic(record.topic)}: no service reading this topic applies it"
            )
        if problem is not None:
            await self._dead_letter(record, headers, envelope, problem, 1, self._now())
            return None
        return _Admitted(record, envelope, headers)

    def _left_to_others(self, topic: str, claimed: str) -> bool:
        """Whether a record claiming ``claimed`` is another group's to apply: a known type
        this handler does not subscribe to, that belongs on this topic. A type of another
        saga topic is no group's here (every service reads a type on its own topic), so it
        is dead-lettered, not skipped by all. Outside the saga's topics any known type is
        left to others."""
        if claimed not in EVENT_TYPES or claimed in self._handler.subscriptions:
            return False
        saga = self._saga_topic(topic)
        return saga is None or TOPIC_OF[claimed] == saga

    async def _handle_together(
        self, handler: BatchEventHandler, admitted: Sequence[_Admitted]
    ) -> bool:
        """One transaction for all of ``admitted``; False (nothing kept) if it failed."""
        by_envelope = {id(item.envelope): item for item in admitted}

        def around(envelope: Envelope) -> contextlib.AbstractContextManager[object]:
            item = by_envelope[id(envelope)]
            return self._hooks.handling(item.record.topic, envelope, item.headers)

        topic = admitted[0].record.topic  # one partition's records
        started = time.perf_counter()
        failed = False
        try:
            with self._hooks.handling_batch(topic, [item.headers for item in admitted]):
                try:
                    await handler.handle_batch([item.envelope for item in admitted], around)
                except Exception as exc:
                    failed = True
                    log.info(  # in the batch's span and log context; re-raised for the span
                        "a batch of %d from %s failed (%r); applying them one at a time",
                        len(admitted),
                        _where(admitted[0].record),
                        exc,
                    )
                    raise
        except Exception:
            if not failed:  # the hook's own error: the batch may have committed
                raise
            return False
        seconds = time.perf_counter() - started
        self._hooks.handled_batch(topic, len(admitted), seconds)
        share = seconds / len(admitted)
        for item in admitted:
            self._hooks.handled(topic, item.envelope.event_type, share)
        return True

    async def _handle(self, item: _Admitted) -> None:
        record, envelope, headers = item
        attempts = outages = 0
        first_failure: datetime | None = None
        while True:
            started = time.perf_counter()
            wait: float | None = None
            with self._hooks.handling(record.topic, envelope, headers):
                error = await self._attempt(envelope)
                if error is not None:  # judged and logged in the attempt's span and log context
                    infrastructure = self._is_infrastructure(error)
                    self._hooks.failed(record.topic, error, infrastructure=infrastructure)
                    if infrastructure:
                        outages += 1
                        wait = self._outage_delay(record, error, outages)
                    else:
                        attempts += 1
                        wait = self._poison_delay(record, error, attempts)
            if error is None:
                seconds = time.perf_counter() - started
                self._hooks.handled(record.topic, envelope.event_type, seconds)
                return
            first_failure = first_failure or self._now()
            if wait is None:
                await self._dead_letter(record, headers, envelope, error, attempts, first_failure)
                return
            await asyncio.sleep(wait)

    async def _attempt(self, envelope: Envelope) -> Exception | None:
        """Hand ``envelope`` to the handler once; the exception it raised, if any."""
        try:
            await self._handler.handle(envelope)
        except Exception as exc:
            return exc
        return None

    async def _dead_letter(
        self,
        record: Any,
        text_headers: Mapping[str, str],
        envelope: Envelope | None,
        error: BaseException,
        attempts: int,
        first_failure: datetime,
    ) -> None:
        """Send the record as it came (key, value, headers) to its DLT, saying why.

        ``text_headers`` and ``envelope`` (None if it did not decode) are for the hooks.
        """
        reason = error.reason if isinstance(error, PoisonMessage) else str(error) or repr(error)
        headers = h.without_dead_letter_headers(record.headers) + h.encode_headers(
            {
                h.DLT_ORIGINAL_TOPIC: record.topic,
                h.DLT_ORIGINAL_PARTITION: str(record.partition),
                h.DLT_ORIGINAL_OFFSET: str(record.offset),
                h.DLT_CONSUMER_GROUP: self._group_id,
                h.DLT_ERROR_TYPE: h.error_type(error),
                h.DLT_ERROR_MESSAGE: reason[:_MAX_ERROR_MESSAGE],
                h.DLT_ATTEMPTS: str(attempts),
                h.DLT_FIRST_FAILURE_AT: format_instant(first_failure),
            }
        )
        outages = 0
        value = record.value
        with self._hooks.dead_lettering(record.topic, text_headers, envelope, error):
            while True:
                try:
                    await self._publisher.send(
                        dead_letter_topic(record.topic), value, key=record.key, headers=headers
                    )
                    break
                except PublishError as exc:
                    if value is not None and isinstance(exc.__cause__, _TOO_LARGE):
                        # The value plus the reasons exceed the broker's limit: retrying
                        # would block the partition for good. The reasons go without the
                        # value, which stays readable at its original offset until the
                        # topic's retention.
                        headers += h.encode_headers({h.DLT_VALUE_DROPPED: str(len(value))})
                        value = None
                        continue
                    outages += 1
                    await asyncio.sleep(self._outage_delay(record, exc, outages))
            self._hooks.dead_lettered(record.topic, error)
            log.error(
                "dead-lettered %s after %d attempt(s): %s",
                _where(record),
                attempts,
                reason[:_MAX_ERROR_MESSAGE],  # as in its header: a record's text is unbounded
            )

    def _poison_delay(self, record: Any, error: BaseException, attempts: int) -> float | None:
        """The wait before retrying after ``attempts`` failed (logged); None when they ran out."""
        if attempts >= self._retry.attempts:
            return None
        log.info("retrying %s after %r", _where(record), error)
        return self._retry.backoff

    def _outage_delay(self, record: Any, error: BaseException, outages: int) -> float:
        """Tell the runner and the log of an infrastructure failure; the wait before retrying."""
        self._outage(record)
        delay = self._retry.infrastructure_delay(outages)
        log.warning(
            "infrastructure failure on %s, retry in %.2f s: %r", _where(record), delay, error
        )
        return delay

    def _is_infrastructure(self, error: BaseException) -> bool:
        extra = self._extra_infrastructure
        return is_transient(error) or (extra is not None and extra(error))


class _Admitted(NamedTuple):
    """A record to handle: its envelope and its headers as text."""

    record: Any
    envelope: Envelope
    headers: dict[str, str]


def _event_type_in_json(value: bytes | None) -> str:
    """The ``eventType`` a broken record's JSON claims, if it parses that far; else ""."""
    with contextlib.suppress(ValueError, TypeError, RecursionError):  # e.g. 100 000 "["
        document = json.loads(value or b"")
        if isinstance(document, dict) and isinstance(document.get("eventType"), str):
            return str(document["eventType"])
    return ""


def _where(record: Any) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"

"""A dead-letter read or replay the broker stops answering: each send, and the read's wait for
records, has its own time limit, and the caller learns how many records went back."""

from __future__ import annotations

import os
import signal

import pytest
from adapters_kafka.dead_letters import DeadLetter, read_dead_letters, replay, to_replay
from adapters_kafka.embedded import EmbeddedBroker
from adapters_kafka.headers import DLT_ORIGINAL_OFFSET, DLT_ORIGINAL_PARTITION, DLT_ORIGINAL_TOPIC
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings

pytestmark = pytest.mark.integration


def letter(offset: int, *, copy_of: int | None = None) -> DeadLetter:
    origin = offset if copy_of is None else copy_of
    headers = [
        (DLT_ORIGINAL_TOPIC, b"order-events"),
        (DLT_ORIGINAL_PARTITION, b"0"),
        (DLT_ORIGINAL_OFFSET, str(origin).encode()),
    ]
    return DeadLetter(0, offset, b"order-1", b"{}", headers)


def test_copies_of_one_record_go_back_once() -> None:
    letters = [letter(0), letter(1), letter(2, copy_of=0), letter(3)]
    assert [each.offset for each in to_replay(letters)] == [0, 1, 3]


async def test_a_broker_frozen_halfway_stops_the_replay_with_a_count() -> None:
    """Before, one 30 s limit covered the whole replay, which then failed without saying how
    many records it had already sent back."""
    broker = EmbeddedBroker()
    servers = broker.start()
    frozen = False
    try:
        letters = [letter(offset) for offset in range(6)]
        sent: list[DeadLetter] = []

        def after_each(done: DeadLetter) -> None:
            nonlocal frozen
            sent.append(done)
            if len(sent) == 3:
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGSTOP)  # answers nothing from now on
                frozen = True

        async with KafkaPublisher(KafkaSettings(bootstrap_servers=servers)) as publisher:
            with pytest.raises(TimeoutError):
                await replay(letters, publisher, each_within=1.0, on_sent=after_each)
            assert [each.offset for each in sent] == [0, 1, 2]
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGCONT)
            frozen = False
    finally:
        if frozen and broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)
        broker.stop()


async def test_reading_from_a_frozen_broker_stops_after_the_stall_limit() -> None:
    """The read has no limit of its own on the whole (a large DLT may take long), only on
    a broker that gives nothing: here it never answers the connection."""
    broker = EmbeddedBroker()
    servers = broker.start()
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        settings = KafkaSettings(bootstrap_servers=servers)
        with pytest.raises(TimeoutError, match=r"^no answer in 1 s$"):
            await read_dead_letters(settings, "order-events", stall_seconds=1.0)
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        broker.stop()

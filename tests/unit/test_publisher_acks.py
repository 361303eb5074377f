"""The publisher's acknowledgements: one given up on at the deadline may fail later, unread."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from adapters_kafka.publisher import KafkaPublisher
from adapters_kafka.settings import KafkaSettings
from aiokafka.errors import RequestTimedOutError
from core_saga.ports import PublishError

pytestmark = pytest.mark.unit


async def test_an_ack_given_up_on_that_fails_later_is_not_logged_as_never_retrieved() -> None:
    """The chaos audit saw ``ERROR asyncio: Future exception was never retrieved ...
    RequestTimedOutError`` after a relay's batch timed out (the batch is sent again)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        publisher = KafkaPublisher(KafkaSettings(bootstrap_servers="unused:1"), ack_timeout=0.05)
        acks: list[asyncio.Future[Any]] = [loop.create_future()]

        async def enqueue(records: object) -> list[asyncio.Future[Any]]:
            return list(acks)

        publisher._producer = object()  # type: ignore[assignment]  # started, as far as it knows
        publisher._enqueue = enqueue  # type: ignore[method-assign,assignment]
        with pytest.raises(PublishError, match=r"no ack in 0\.05 s"):
            await publisher._send_all([])
        acks[0].set_exception(RequestTimedOutError())
        await asyncio.sleep(0)  # its callbacks run
        acks.clear()
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert not [c for c in reported if "never retrieved" in str(c.get("message"))]

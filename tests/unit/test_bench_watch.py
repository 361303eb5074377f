"""The bench's order-events reader stops without throwing a finished run's results away."""

from __future__ import annotations

import asyncio
import logging

import pytest
from adapters_kafka.settings import KafkaSettings
from aiokafka.errors import KafkaConnectionError
from commerce_apps.bench.watch import EventWatcher

pytestmark = pytest.mark.unit


class StopFails:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def stop(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error", [asyncio.CancelledError(), KafkaConnectionError("Connection at 127.0.0.1:9092 closed")]
)
async def test_a_reader_whose_broker_went_away_still_closes(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    """aiokafka's fetcher, retrying a broker that went away mid-run, raised CancelledError
    from its close: the bench ended "cancelled from inside" without its summary."""
    watcher = EventWatcher(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    watcher._consumer = StopFails(error)  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="commerce_apps.bench.watch"):
        await watcher.close()
    assert "did not stop cleanly" in caplog.text


async def test_a_cancelled_close_is_still_cancelled() -> None:
    """Ctrl-C while it stops: that CancelledError is the run's, and goes on."""
    stopping = asyncio.Event()

    class Slow:
        async def stop(self) -> None:
            stopping.set()
            await asyncio.sleep(10)

    watcher = EventWatcher(KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    watcher._consumer = Slow()  # type: ignore[assignment]
    closing = asyncio.create_task(watcher.close())
    await stopping.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing

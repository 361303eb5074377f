"""A clock that tests set and advance by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

START: Final = datetime(2026, 1, 1, tzinfo=UTC)


class ManualClock:
    """``Clock`` whose time moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self._now = _aware(start)

    def now(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        self._now = _aware(at)

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("the clock tells aware UTC time; give it a timezone")
    return at.astimezone(UTC)

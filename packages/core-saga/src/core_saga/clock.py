"""The production clock: aware UTC wall time."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    """``Clock`` backed by the system's wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

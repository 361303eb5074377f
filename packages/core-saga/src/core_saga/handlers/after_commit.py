"""Remote calls made after a commit, outside any transaction, and the sweep that repeats them.

A remote call (the payment gateway, a notifier) awaited inside a consuming transaction holds
its locks and a pooled connection for as long as the remote side takes. So the transaction
only records what is to be done; the calls follow its commit, a bounded number at a time,
each with a timeout; what they leave undone stays recorded, and a periodic sweep makes the
calls again. The remote side must therefore deduplicate a repeated call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from core_saga.ports import Clock, InfrastructureError, Position

T = TypeVar("T")
R = TypeVar("R")

CONCURRENCY = 16
"""Calls in flight per settlement: a batch of 100 waits about 7 calls' time."""
QUIET_FOR = timedelta(seconds=30)
"""The least time between two warnings of calls failing after a consumed batch."""


def is_outage(exc: BaseException) -> bool:
    """The remote side unreachable, refusing, or slower than its timeout. Anything else is
    a bug in its adapter, logged as one; either way what it was called for stays undone, the
    others are recorded, and the sweep calls it again."""
    return isinstance(exc, InfrastructureError | OSError | TimeoutError)


async def call_each(
    items: Sequence[T],
    call: Callable[[T], Awaitable[R]],
    *,
    each_within: timedelta,
    on_bug: Callable[[T, Exception], None],
    concurrency: int = CONCURRENCY,
) -> tuple[list[tuple[T, R]], list[Exception]]:
    """``call`` for each item, ``concurrency`` at a time, each bounded by ``each_within``: the
    items answered with their answers, and the exceptions of the calls that failed (a bug,
    not an outage, is first passed to ``on_bug``, with the item)."""
    slots = asyncio.Semaphore(concurrency)

    async def bounded(item: T) -> R:
        async with slots, asyncio.timeout(each_within.total_seconds()):
            return await call(item)

    results = await asyncio.gather(*(bounded(item) for item in items), return_exceptions=True)
    answered: list[tuple[T, R]] = []
    failures: list[Exception] = []
    for item, result in zip(items, results, strict=True):
        if isinstance(result, Exception):
            if not is_outage(result):
                on_bug(item, result)
            failures.append(result)
        elif isinstance(result, BaseException):
            raise result  # cancelled
        else:
            answered.append((item, result))
    return answered, failures


class RemoteUnavailable(InfrastructureError):
    """A remote call that follows a commit failed: its row stays waiting for the sweep.

    ``committed`` counts what the same run recorded (committed, with its events) before
    raising it: a sweep that meets it may still have done work, and traced it.
    """

    def __init__(self, message: str, committed: int = 0) -> None:
        super().__init__(message)
        self.committed = committed


@dataclass(frozen=True)
class Waiting(Generic[T]):
    """The rows a failure left undone, as the sweep reads them: ``read(before, limit,
    after)`` gives up to ``limit`` of those waiting since ``before`` or earlier, oldest first
    and after ``after`` (keyset), each in a transaction of its own; ``position`` is a row's
    ``(waiting since, id)``."""

    read: Callable[[datetime, int, Position | None], Awaitable[Sequence[T]]]
    position: Callable[[T], Position]

    async def sweep(
        self,
        before: datetime,
        settle: Callable[[Sequence[T]], Awaitable[int]],
        *,
        limit: int,
        failed: type[Exception],
    ) -> int:
        """Settle every page, each once; return how many settled. A ``failed`` raised by a
        page is raised again after the last page: what keeps failing (the longest waiting,
        first on every read) must not hold back the rest. A ``RemoteUnavailable`` then
        counts what every page committed."""
        total, failure, after = 0, None, None
        while True:
            page = await self.read(before, limit, after)
            try:
                total += await settle(page)
            except failed as exc:
                failure = exc
                if isinstance(exc, RemoteUnavailable):
                    total += exc.committed
            if len(page) < limit:
                break
            after = self.position(page[-1])
        if failure is not None:
            if isinstance(failure, RemoteUnavailable):
                failure.committed = total
            raise failure
        return total

    async def longest(self, now: datetime) -> timedelta:
        """How long the row waiting longest has waited; zero if none."""
        oldest = await self.read(now, 1, None)
        return now - self.position(oldest[0])[0] if oldest else timedelta(0)


@dataclass
class QuietAfterCommit:
    """Runs the calls that follow a consumer's commit. What fails there stays recorded for
    the sweep, so nothing is raised: failing the consumed batch would only redeliver events
    its inbox now skips. An outage is said at most once per ``QUIET_FOR`` (a batch per
    event would otherwise log one each), anything else every time, with its traceback."""

    clock: Clock
    log: logging.Logger
    what: str
    _warned_at: datetime | None = field(default=None, init=False, repr=False)

    async def run(self, settle: Callable[[], Awaitable[object]], count: int) -> None:
        try:
            await settle()
        except InfrastructureError as exc:
            now = self.clock.now()
            if self._warned_at is None or now - self._warned_at >= QUIET_FOR:
                self._warned_at = now
                self.log.warning("%s; the sweep tries again later", exc, exc_info=exc)
        except Exception:
            self.log.exception("settling %d %s failed; the sweep tries again", count, self.what)

"""In-memory tables, per-transaction staged views of them, and row locks."""

from __future__ import annotations

import asyncio
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Hashable
from copy import deepcopy
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RowLocks:
    """Row locks held until the owning transaction ends (``SELECT … FOR UPDATE`` in memory).

    Re-entrant per owner, so a transaction may lock a row it already holds.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._owners: dict[Hashable, object] = {}

    async def acquire(self, owner: object, key: Hashable, *, wait: bool = True) -> bool:
        """Lock ``key`` for ``owner``; without ``wait``, False when another owner holds it."""
        if self._owners.get(key) is owner:
            return True
        lock = self._locks.setdefault(key, asyncio.Lock())
        if not wait and lock.locked():
            return False
        await lock.acquire()
        self._owners[key] = owner
        return True

    def release_all(self, owner: object) -> None:
        for key in [key for key, held_by in self._owners.items() if held_by is owner]:
            del self._owners[key]
            self._locks[key].release()


class LockScope:
    """One transaction's locks on one table's rows."""

    def __init__(self, locks: RowLocks, owner: object, table: str) -> None:
        self._locks, self._owner, self._table = locks, owner, table

    async def lock(self, key: Hashable) -> None:
        await self._locks.acquire(self._owner, (self._table, key))

    async def try_lock(self, key: Hashable) -> bool:
        """Lock unless another transaction holds the row (``SKIP LOCKED``)."""
        return await self._locks.acquire(self._owner, (self._table, key), wait=False)


class Table(Generic[K, V]):
    """The committed rows of one table; ``copy`` keeps callers from sharing row objects."""

    def __init__(self, copy: Callable[[V], V] = deepcopy) -> None:
        self.rows: dict[K, V] = {}
        self.copy = copy


class Staged(Generic[K, V]):
    """One transaction's view of a table: the committed rows overlaid with its own writes."""

    def __init__(self, table: Table[K, V]) -> None:
        self._table = table
        self._writes: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        row = self._writes[key] if key in self._writes else self._table.rows.get(key)
        return None if row is None else self._table.copy(row)

    def put(self, key: K, value: V) -> None:
        self._writes[key] = self._table.copy(value)

    def select(self, keep: Callable[[V], bool] = lambda _: True) -> list[V]:
        """Copies of the visible rows that ``keep`` accepts, in insertion order."""
        rows = {**self._table.rows, **self._writes}
        return [self._table.copy(row) for row in rows.values() if keep(row)]

    def newest(
        self,
        keep: Callable[[V], bool],
        order: Callable[[V], Any],
        limit: int,
        before: Any = None,
    ) -> list[V]:
        """The last ``limit`` rows ``keep`` accepts by ``order`` (among those ordered strictly
        before ``before``, if given), oldest first: what SQL's ``WHERE order < before ORDER BY
        … DESC LIMIT`` keeps, in ascending order."""
        ordered = sorted(self.select(keep), key=order)
        if before is not None:
            ordered = ordered[: bisect_left(ordered, before, key=order)]
        return ordered[max(len(ordered) - limit, 0) :]

    def oldest(
        self,
        keep: Callable[[V], bool],
        order: Callable[[V], Any],
        limit: int,
        after: Any = None,
    ) -> list[V]:
        """The first ``limit`` rows ``keep`` accepts by ``order`` (among those ordered
        strictly after ``after``, if given): what a sweep's ``WHERE order > after ORDER BY …
        LIMIT`` keeps (keyset paging)."""
        ordered = sorted(self.select(keep), key=order)
        if after is not None:
            ordered = ordered[bisect_right(ordered, after, key=order) :]
        return ordered[:limit]

    def apply(self) -> None:
        """Commit: the writes become the table's rows."""
        self._table.rows.update(self._writes)
        self._writes = {}

    def discard(self) -> None:
        self._writes = {}

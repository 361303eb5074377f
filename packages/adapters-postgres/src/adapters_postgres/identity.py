"""What one transaction holds: its order locks, and the rows it read, added and changed."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw

T = TypeVar("T")


def order_lock_key(order_id: UUID) -> int:
    """A signed 64-bit advisory lock key from the order id (a collision only serialises)."""
    return int.from_bytes(order_id.bytes[:8], "big", signed=True)


# unnest yields the keys in array order, and the locks are taken in that order. On the driver
# (``adapters_postgres.raw``): every consumer batch runs it.
_ADVISORY_LOCKS = raw.Compiled(
    text("SELECT pg_advisory_xact_lock(key) FROM unnest(:keys) AS key").bindparams(
        bindparam("keys", type_=ARRAY(BigInteger))
    )
)


class OrderLocks:
    """``pg_advisory_xact_lock`` on order keys (``order_lock_key``) for one transaction.

    A key is locked once per transaction: a batch holds all its orders' keys up front, and
    the reservation and payment reads that lock their order again inside it then cost no
    round trip. ``released()`` when the transaction ends (the server frees them then).
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._held: set[int] = set()

    async def take(self, order_ids: Collection[UUID]) -> None:
        """Lock the keys not yet held, in ascending key order (batches never deadlock)."""
        keys = sorted({order_lock_key(order_id) for order_id in order_ids} - self._held)
        if keys:
            await raw.fetch_compiled(self._conn, _ADVISORY_LOCKS, {"keys": keys})
        self._held.update(keys)

    def released(self) -> None:
        self._held.clear()


class IdentityMap(Generic[T]):
    """Rows the transaction holds locked, keyed by id (an order's, or a product's).

    ``known`` answers reads (``None``: there is no row), ``new`` and ``changed`` are
    what the commit must insert and update. Something added and then changed before the
    commit stays in ``new``: it is inserted as it is by then.
    """

    def __init__(self) -> None:
        self.known: dict[UUID, T | None] = {}
        self.new: dict[UUID, T] = {}
        self.changed: dict[UUID, T] = {}

    def unread(self, order_ids: Collection[UUID]) -> list[UUID]:
        """The ones not read yet, in ascending order (the order locks are taken in)."""
        return sorted(set(order_ids) - self.known.keys())

    async def lock_unread(self, locks: OrderLocks, order_ids: Collection[UUID]) -> list[UUID]:
        """Take the order locks of the unread ones; return those, for the caller to read."""
        wanted = self.unread(order_ids)
        if wanted:
            await locks.take(wanted)
        return wanted

    def add(self, order_id: UUID, value: T) -> None:
        self.known[order_id] = self.new[order_id] = value

    def save(self, order_id: UUID, value: T) -> None:
        self.known[order_id] = value
        (self.new if order_id in self.new else self.changed)[order_id] = value

    async def write(
        self,
        conn: AsyncConnection,
        insert: raw.Compiled,
        inserted: Callable[[T], Mapping[str, Any]],
        update: raw.Compiled,
        updated: Callable[[T], Mapping[str, Any]],
    ) -> None:
        """Insert the new rows, then update the changed ones: a round trip each, at most."""
        if self.new:
            await raw.execute_many(conn, insert, [inserted(each) for each in self.new.values()])
        if self.changed:
            await raw.execute_many(conn, update, [updated(each) for each in self.changed.values()])
        self.written()

    def written(self) -> None:
        """What was new and changed is in the table now."""
        self.new.clear()
        self.changed.clear()

    def clear(self) -> None:
        """The transaction ended: its locks are gone, and so is anything not written."""
        self.known.clear()
        self.written()

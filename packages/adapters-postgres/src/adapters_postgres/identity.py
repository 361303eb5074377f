"""The identity map a repository keeps for one transaction: what it read, added and changed."""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, TypeVar
from uuid import UUID

from adapters_postgres.repositories import OrderLocks

T = TypeVar("T")


class IdentityMap(Generic[T]):
    """Rows of orders whose locks the transaction holds, keyed by order id.

    ``known`` answers reads (``None``: the order has no row), ``new`` and ``changed`` are
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

    def written(self) -> None:
        """The commit wrote what was new and changed."""
        self.new.clear()
        self.changed.clear()

    def clear(self) -> None:
        """The transaction ended: its locks are gone, and so is anything not written."""
        self.known.clear()
        self.written()

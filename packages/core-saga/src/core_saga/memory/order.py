"""The order service's in-memory database: orders and idempotency keys."""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from core_saga.memory.tables import LockScope, Staged, Table
from core_saga.memory.unit_of_work import MemoryDatabase, MemoryUnitOfWork
from core_saga.messages import Envelope
from core_saga.orders import Order
from core_saga.ports import Clock, IdempotencyStore, KeyClaim, OrderRepository, StoredResponse


def copy_order(order: Order) -> Order:
    return replace(order, history=list(order.history))


@dataclass(frozen=True)
class IdempotencyRecord:
    request_hash: str
    status_code: int | None
    body: Any
    expires_at: datetime


class MemoryOrders:
    def __init__(self, rows: Staged[UUID, Order], locks: LockScope) -> None:
        self._rows, self._locks = rows, locks

    async def add(self, order: Order) -> None:
        if self._rows.get(order.id) is not None:
            raise ValueError(f"order {order.id} already exists")
        self._rows.put(order.id, order)

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        if for_update:
            await self._locks.lock(order_id)
        return self._rows.get(order_id)

    async def save(self, order: Order) -> None:
        self._rows.put(order.id, order)

    async def overdue(self, now: datetime, limit: int) -> Sequence[Order]:
        due = sorted(self._rows.select(lambda o: o.overdue(now)), key=lambda o: o.deadline_at)
        picked: list[Order] = []
        for order in due:
            if len(picked) == limit:
                break
            if await self._locks.try_lock(order.id):
                current = self._rows.get(order.id)  # re-read under the lock
                if current is not None and current.overdue(now):
                    picked.append(current)
        return picked


class MemoryIdempotencyStore:
    def __init__(self, rows: Staged[str, IdempotencyRecord], locks: LockScope) -> None:
        self._rows, self._locks = rows, locks

    async def claim(
        self,
        key: str,
        request_hash: str,
        now: datetime,
        expires_at: datetime,
        response: tuple[int, Any] | None = None,
    ) -> StoredResponse | None:
        await self._locks.lock(key)  # a concurrent claim waits for this transaction to end
        held = self._rows.get(key)
        if held is not None and held.expires_at > now:
            return StoredResponse(held.request_hash, held.status_code, deepcopy(held.body))
        status_code, body = response or (None, None)
        self._rows.put(
            key, IdempotencyRecord(request_hash, status_code, deepcopy(body), expires_at)
        )
        return None

    async def save_response(self, key: str, status_code: int, body: Any) -> None:
        held = self._rows.get(key)
        if held is None:
            raise KeyError(f"idempotency key {key!r} was not claimed")
        self._rows.put(key, replace(held, status_code=status_code, body=deepcopy(body)))


class MemoryOrderDatabase(MemoryDatabase):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.orders: Table[UUID, Order] = Table(copy_order)
        self.idempotency_keys: Table[str, IdempotencyRecord] = Table(lambda record: record)

    def unit_of_work(self) -> MemoryOrderUnitOfWork:
        return MemoryOrderUnitOfWork(self)


class MemoryOrderUnitOfWork(MemoryUnitOfWork):
    def __init__(self, db: MemoryOrderDatabase) -> None:
        super().__init__(db)
        self.orders: OrderRepository = MemoryOrders(
            self.stage(db.orders), self.lock_scope("orders")
        )
        self.idempotency: IdempotencyStore = MemoryIdempotencyStore(
            self.stage(db.idempotency_keys), self.lock_scope("idempotency_keys")
        )

    async def place(
        self, order: Order, created: Envelope, claim: KeyClaim
    ) -> StoredResponse | None:
        """The claim, the order, its event and the commit, one step after another."""
        stored = await self.idempotency.claim(
            claim.key, claim.request_hash, claim.now, claim.expires_at, claim.response
        )
        if stored is not None:
            return stored
        await self.orders.add(order)
        await self.outbox.add(created)
        await self.commit()
        return None

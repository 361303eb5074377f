"""The payment service's in-memory database: payments and cancelled orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from core_saga.memory.tables import LockScope, Staged, Table
from core_saga.memory.unit_of_work import HELD_ORDERS, MemoryDatabase, MemoryUnitOfWork
from core_saga.payments import Payment
from core_saga.ports import LIST_LIMIT, Clock, PaymentRepository, Position


class MemoryPayments:
    def __init__(
        self, rows: Staged[UUID, Payment], cancelled: Staged[UUID, bool], locks: LockScope
    ) -> None:
        self._rows, self._cancelled, self._locks = rows, cancelled, locks

    async def lock_order(self, order_id: UUID) -> None:
        await self._locks.lock(order_id)

    async def get_by_order(self, order_id: UUID) -> Payment | None:
        found = await self.list(order_id)
        return found[0] if found else None

    async def list(
        self,
        order_id: UUID | None = None,
        *,
        limit: int = LIST_LIMIT,
        before: Position | None = None,
    ) -> Sequence[Payment]:
        return self._rows.newest(
            lambda p: order_id is None or p.order_id == order_id,
            lambda p: (p.created_at, p.id),
            limit,
            before,
        )

    async def add(self, payment: Payment) -> None:
        """At most one payment per order, as PostgreSQL's unique ``order_id`` enforces."""
        if await self.get_by_order(payment.order_id) is not None:
            raise ValueError(f"order {payment.order_id} already has a payment")
        self._rows.put(payment.id, payment)

    async def save(self, payment: Payment) -> None:
        self._rows.put(payment.id, payment)

    async def mark_cancelled(self, order_id: UUID) -> None:
        self._cancelled.put(order_id, True)

    async def was_cancelled(self, order_id: UUID) -> bool:
        return self._cancelled.get(order_id) is not None

    async def due(
        self, before: datetime, limit: int, *, after: Position | None = None
    ) -> Sequence[Payment]:
        return self._rows.oldest(
            lambda p: p.status.due and p.changed_at <= before,
            lambda p: (p.changed_at, p.id),
            limit,
            after,
        )


class MemoryPaymentDatabase(MemoryDatabase):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.payments: Table[UUID, Payment] = Table(replace)
        self.cancelled_orders: Table[UUID, bool] = Table(lambda flag: flag)

    def unit_of_work(self) -> MemoryPaymentUnitOfWork:
        return MemoryPaymentUnitOfWork(self)


class MemoryPaymentUnitOfWork(MemoryUnitOfWork):
    def __init__(self, db: MemoryPaymentDatabase) -> None:
        super().__init__(db)
        self.payments: PaymentRepository = MemoryPayments(
            self.stage(db.payments),
            self.stage(db.cancelled_orders),
            self.lock_scope(HELD_ORDERS),  # as in PostgreSQL: the key ``hold`` takes
        )

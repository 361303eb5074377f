"""Payments and the orders seen cancelled: read once per locked order, written at commit.

Every payment event first locks its order (``lock_order``); the same call reads the
order's payment and whether it was cancelled, in one statement. Once the lock is held
nobody else can change either, so the event's checks are answered from memory and its
writes wait for ``flush`` (the unit of work's commit). A consumer batch locks and reads all
its orders at once (``lock_all``), so it costs a fixed handful of statements, not three or
four per event.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from core_saga.payments import Payment, PaymentStatus
from core_saga.ports import LIST_LIMIT, Position
from sqlalchemy import exists, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw
from adapters_postgres.identity import IdentityMap, OrderLocks
from adapters_postgres.sql import (
    every_column,
    newest_page,
    oldest_waiting,
    param,
    unnest_params,
    waiting_params,
)
from adapters_postgres.tables import PAYMENTS_DUE, cancelled_orders, payments

_FIELDS = ("id", "order_id", "amount", "currency", "reason", "created_at", "updated_at")


def _payment(row: Any) -> Payment:
    """From an asyncpg record or a SQLAlchemy row's ``_mapping``: read by column name."""
    return Payment(**{name: row[name] for name in _FIELDS}, status=PaymentStatus(row["status"]))


def _added(payment: Payment) -> dict[str, Any]:
    return {name: getattr(payment, name) for name in _FIELDS} | {"status": payment.status.value}


def _saved(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.id,
        "status": payment.status.value,
        "reason": payment.reason,
        "updated_at": payment.updated_at,
    }


_PAYMENT_OF_ORDER = raw.Compiled(
    select(payments).where(payments.c.order_id == param(payments.c.order_id))
)

_WANTED = unnest_params("wanted", cancelled_orders.c.order_id)
_PAYMENTS_OF_ORDERS = raw.Compiled(
    select(
        _WANTED.c.order_id.label("wanted"),
        *payments.c,
        cancelled_orders.c.order_id.is_not(None).label("cancelled"),
    ).select_from(
        _WANTED.outerjoin(payments, payments.c.order_id == _WANTED.c.order_id).outerjoin(
            cancelled_orders, cancelled_orders.c.order_id == _WANTED.c.order_id
        )
    )
)
"""Each wanted order with its payment (NULLs if none) and whether it was cancelled."""

_ADD_PAYMENT = raw.Compiled(insert(payments).values(every_column(payments)))

_SAVE_PAYMENT = raw.Compiled(
    update(payments)
    .where(payments.c.id == param(payments.c.id, "payment_id"))
    .values(
        status=param(payments.c.status),
        reason=param(payments.c.reason),
        updated_at=param(payments.c.updated_at),
    )
)

_MARK_CANCELLED = raw.Compiled(
    pg_insert(cancelled_orders)
    .values(order_id=param(cancelled_orders.c.order_id))
    .on_conflict_do_nothing()
)

_DUE = raw.Compiled(
    oldest_waiting(select(payments).where(text(PAYMENTS_DUE)), payments.c.updated_at, payments.c.id)
)
"""The predicate as written in ``payments_due_idx`` (literal, so a generic plan of the
prepared statement can use that index too), read along its ``(updated_at, id)``."""

_WAS_CANCELLED = raw.Compiled(
    select(exists().where(cancelled_orders.c.order_id == param(cancelled_orders.c.order_id)))
)


class PostgresPaymentRepository:
    """Payments (one per order, unique) and the orders already seen cancelled."""

    def __init__(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        self._conn = conn
        self._locks = locks
        self._held: IdentityMap[Payment] = IdentityMap()
        self._cancelled: set[UUID] = set()  # orders seen cancelled, among those read or here
        self._cancelling: set[UUID] = set()  # cancelled here: to insert at commit

    async def lock_order(self, order_id: UUID) -> None:
        """Works before any payment row exists; freed at commit."""
        await self.lock_all((order_id,))

    async def lock_all(self, order_ids: Collection[UUID]) -> None:
        """Lock the orders (ascending keys), then read their payments in one statement."""
        wanted = await self._held.lock_unread(self._locks, order_ids)
        if not wanted:
            return
        rows = await raw.fetch_compiled(
            self._conn, _PAYMENTS_OF_ORDERS, {"wanted_order_id": wanted}
        )
        for row in rows:
            self._held.known[row["wanted"]] = None if row["id"] is None else _payment(row)
            if row["cancelled"]:
                self._cancelled.add(row["wanted"])

    async def get_by_order(self, order_id: UUID) -> Payment | None:
        if order_id in self._held.known:
            return self._held.known[order_id]
        rows = await raw.fetch_compiled(self._conn, _PAYMENT_OF_ORDER, {"order_id": order_id})
        return _payment(rows[0]) if rows else None

    async def list(
        self,
        order_id: UUID | None = None,
        *,
        limit: int = LIST_LIMIT,
        before: Position | None = None,
    ) -> Sequence[Payment]:
        rows = await newest_page(self._conn, payments, order_id, limit, before)
        return [_payment(row) for row in rows]

    async def add(self, payment: Payment) -> None:
        self._held.add(payment.order_id, payment)

    async def save(self, payment: Payment) -> None:
        self._held.save(payment.order_id, payment)

    async def mark_cancelled(self, order_id: UUID) -> None:
        self._cancelled.add(order_id)
        self._cancelling.add(order_id)

    async def was_cancelled(self, order_id: UUID) -> bool:
        if order_id in self._held.known or order_id in self._cancelled:
            return order_id in self._cancelled
        rows = await raw.fetch_compiled(self._conn, _WAS_CANCELLED, {"order_id": order_id})
        return bool(rows[0][0])

    async def due(
        self, before: datetime, limit: int, *, after: Position | None = None
    ) -> Sequence[Payment]:
        params = waiting_params(before, limit, after)
        return [_payment(row) for row in await raw.fetch_compiled(self._conn, _DUE, params)]

    async def flush(self) -> None:
        """Insert new payments, update changed ones, note cancellations: a round trip each."""
        await self._held.write(self._conn, _ADD_PAYMENT, _added, _SAVE_PAYMENT, _saved)
        if self._cancelling:
            await raw.execute_many(
                self._conn,
                _MARK_CANCELLED,
                [{"order_id": order_id} for order_id in sorted(self._cancelling)],
            )
        self._cancelling.clear()

    def transaction_ended(self) -> None:
        self._held.clear()
        self._cancelled.clear()
        self._cancelling.clear()

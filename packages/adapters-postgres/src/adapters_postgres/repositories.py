"""Repositories: explicit SQL over the Core tables, mapped to the domain dataclasses by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from core_saga.inventory import Product, Reservation, ReservationStatus
from core_saga.messages import LineItem
from core_saga.notifications import Notification, NotificationType
from core_saga.orders import Order, OrderStatus, StatusChange
from core_saga.payments import Payment, PaymentStatus
from sqlalchemy import Row, bindparam, exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres.tables import (
    cancelled_orders,
    notifications,
    order_items,
    order_status_history,
    orders,
    payments,
    reservation_lines,
    reservations,
)
from adapters_postgres.tables import (
    products as product_table,
)

OPEN_STATUSES = (OrderStatus.PENDING.value, OrderStatus.STOCK_RESERVED.value)


def order_lock_key(order_id: UUID) -> int:
    """A signed 64-bit advisory lock key from the order id (a collision only serialises)."""
    return int.from_bytes(order_id.bytes[:8], "big", signed=True)


# --- order database ------------------------------------------------------------------------


class PostgresOrderRepository:
    """Orders with their items and status history (append-only, numbered per order)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._stored_history: dict[UUID, int] = {}  # entries already in the table, per order

    async def add(self, order: Order) -> None:
        await self._conn.execute(
            insert(orders).values(
                id=order.id,
                customer_id=order.customer_id,
                status=order.status.value,
                currency=order.currency,
                total_amount=order.total_amount,
                created_at=order.created_at,
                updated_at=order.updated_at,
                deadline_at=order.deadline_at,
                cancellation_reason=order.cancellation_reason,
            )
        )
        await self._conn.execute(
            insert(order_items),
            [
                {
                    "order_id": order.id,
                    "line_no": line_no,
                    "product_id": item.product_id,
                    "quantity": item.quantity,
                    "unit_price": item.unit_price,
                }
                for line_no, item in enumerate(order.items)
            ],
        )
        await self._append_history(order, 0)

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        query = select(orders).where(orders.c.id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return (await self._load([row]))[0]

    async def save(self, order: Order) -> None:
        await self._conn.execute(
            update(orders)
            .where(orders.c.id == order.id)
            .values(
                status=order.status.value,
                updated_at=order.updated_at,
                cancellation_reason=order.cancellation_reason,
            )
        )
        stored = self._stored_history.get(order.id)
        if stored is None:  # saved without being read in this unit of work
            stored = await self._conn.scalar(
                select(func.count())
                .select_from(order_status_history)
                .where(order_status_history.c.order_id == order.id)
            )
        await self._append_history(order, int(stored or 0))

    async def overdue(self, now: datetime, limit: int) -> Sequence[Order]:
        """``SKIP LOCKED``: replicas sweeping at once each take different orders."""
        query = (
            select(orders)
            .where(orders.c.status.in_(OPEN_STATUSES), orders.c.deadline_at <= now)
            .order_by(orders.c.deadline_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = (await self._conn.execute(query)).all()
        return await self._load(rows)

    async def _append_history(self, order: Order, stored: int) -> None:
        new = [
            {
                "order_id": order.id,
                "seq": seq,
                "status": change.status.value,
                "at": change.at,
                "event_id": change.event_id,
                "event_type": change.event_type,
            }
            for seq, change in enumerate(order.history)
            if seq >= stored
        ]
        if new:
            await self._conn.execute(insert(order_status_history), new)
        self._stored_history[order.id] = len(order.history)

    async def _load(self, rows: Sequence[Row[Any]]) -> list[Order]:
        """Orders for ``rows``, with items and history fetched in one query each."""
        if not rows:
            return []
        ids = [row.id for row in rows]
        items: dict[UUID, list[LineItem]] = {order_id: [] for order_id in ids}
        item_rows = await self._conn.execute(
            select(order_items)
            .where(order_items.c.order_id.in_(ids))
            .order_by(order_items.c.order_id, order_items.c.line_no)
        )
        for item in item_rows:
            items[item.order_id].append(
                LineItem(
                    product_id=item.product_id,
                    quantity=item.quantity,
                    unit_price=item.unit_price,
                )
            )
        history: dict[UUID, list[StatusChange]] = {order_id: [] for order_id in ids}
        history_rows = await self._conn.execute(
            select(order_status_history)
            .where(order_status_history.c.order_id.in_(ids))
            .order_by(order_status_history.c.order_id, order_status_history.c.seq)
        )
        for change in history_rows:
            history[change.order_id].append(
                StatusChange(
                    OrderStatus(change.status), change.at, change.event_id, change.event_type
                )
            )
        for order_id, changes in history.items():
            self._stored_history[order_id] = len(changes)
        return [
            Order(
                id=row.id,
                customer_id=row.customer_id,
                items=tuple(items[row.id]),
                currency=row.currency,
                created_at=row.created_at,
                deadline_at=row.deadline_at,
                status=OrderStatus(row.status),
                updated_at=row.updated_at,
                cancellation_reason=row.cancellation_reason,
                history=history[row.id],
            )
            for row in rows
        ]


# --- inventory database --------------------------------------------------------------------


def _product(row: Row[Any]) -> Product:
    return Product(row.id, row.name, row.stock, row.reserved, row.sold)


class PostgresProductRepository:
    """Products; ``lock`` takes row locks in ascending id order, so reservations never deadlock."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def list(self) -> Sequence[Product]:
        rows = await self._conn.execute(select(product_table).order_by(product_table.c.id))
        return [_product(row) for row in rows]

    async def get(self, product_id: UUID) -> Product | None:
        row = (
            await self._conn.execute(select(product_table).where(product_table.c.id == product_id))
        ).first()
        return None if row is None else _product(row)

    async def lock(self, product_ids: Sequence[UUID]) -> dict[UUID, Product]:
        """One ``SELECT … ORDER BY id FOR UPDATE``: PostgreSQL locks rows in the sorted order."""
        if not product_ids:
            return {}
        rows = await self._conn.execute(
            select(product_table)
            .where(product_table.c.id.in_(sorted(set(product_ids))))
            .order_by(product_table.c.id)
            .with_for_update()
        )
        return {row.id: _product(row) for row in rows}

    async def save(self, products: Sequence[Product]) -> None:
        if not products:
            return
        await self._conn.execute(
            update(product_table)
            .where(product_table.c.id == bindparam("product_id"))
            .values(
                stock=bindparam("new_stock"),
                reserved=bindparam("new_reserved"),
                sold=bindparam("new_sold"),
            ),
            [
                {
                    "product_id": product.id,
                    "new_stock": product.stock,
                    "new_reserved": product.reserved,
                    "new_sold": product.sold,
                }
                for product in sorted(products, key=lambda product: product.id)
            ],
        )


class PostgresReservationRepository:
    """What each order holds; a RELEASED row stays as the tombstone that blocks a re-reserve."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Reservation | None:
        """With ``for_update`` the order id is locked even while no row exists yet, so a
        reservation and a release racing on one order take turns instead of colliding."""
        query = select(reservations).where(reservations.c.order_id == order_id)
        if for_update:
            await self._conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": order_lock_key(order_id)}
            )
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        lines = await self._conn.execute(
            select(reservation_lines.c.product_id, reservation_lines.c.quantity)
            .where(reservation_lines.c.order_id == order_id)
            .order_by(reservation_lines.c.product_id)
        )
        return Reservation(
            order_id=order_id,
            lines={line.product_id: line.quantity for line in lines},
            status=ReservationStatus(row.status),
        )

    async def add(self, reservation: Reservation) -> None:
        await self._conn.execute(
            insert(reservations).values(
                order_id=reservation.order_id, status=reservation.status.value
            )
        )
        if reservation.lines:
            await self._conn.execute(
                insert(reservation_lines),
                [
                    {"order_id": reservation.order_id, "product_id": pid, "quantity": qty}
                    for pid, qty in reservation.lines.items()
                ],
            )

    async def save(self, reservation: Reservation) -> None:
        """Persist the status; lines are fixed when the reservation is added."""
        await self._conn.execute(
            update(reservations)
            .where(reservations.c.order_id == reservation.order_id)
            .values(status=reservation.status.value)
        )


# --- payment database ----------------------------------------------------------------------


def _payment(row: Row[Any]) -> Payment:
    return Payment(
        id=row.id,
        order_id=row.order_id,
        amount=row.amount,
        currency=row.currency,
        status=PaymentStatus(row.status),
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class PostgresPaymentRepository:
    """Payments (one per order, unique) and the orders already seen cancelled."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lock_order(self, order_id: UUID) -> None:
        """``pg_advisory_xact_lock``: works before any payment row exists; freed at commit."""
        await self._conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": order_lock_key(order_id)}
        )

    async def get_by_order(self, order_id: UUID) -> Payment | None:
        row = (
            await self._conn.execute(select(payments).where(payments.c.order_id == order_id))
        ).first()
        return None if row is None else _payment(row)

    async def list(self, order_id: UUID | None = None) -> Sequence[Payment]:
        query = select(payments).order_by(payments.c.created_at, payments.c.id)
        if order_id is not None:
            query = query.where(payments.c.order_id == order_id)
        return [_payment(row) for row in await self._conn.execute(query)]

    async def add(self, payment: Payment) -> None:
        await self._conn.execute(
            insert(payments).values(
                id=payment.id,
                order_id=payment.order_id,
                amount=payment.amount,
                currency=payment.currency,
                status=payment.status.value,
                reason=payment.reason,
                created_at=payment.created_at,
                updated_at=payment.updated_at,
            )
        )

    async def save(self, payment: Payment) -> None:
        await self._conn.execute(
            update(payments)
            .where(payments.c.id == payment.id)
            .values(
                status=payment.status.value, reason=payment.reason, updated_at=payment.updated_at
            )
        )

    async def mark_cancelled(self, order_id: UUID) -> None:
        await self._conn.execute(
            pg_insert(cancelled_orders).values(order_id=order_id).on_conflict_do_nothing()
        )

    async def was_cancelled(self, order_id: UUID) -> bool:
        found = await self._conn.scalar(
            select(exists().where(cancelled_orders.c.order_id == order_id))
        )
        return bool(found)


# --- notification database -----------------------------------------------------------------


class PostgresNotificationRepository:
    """Notifications; the unique order id makes a second one for the same order a no-op."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, notification: Notification) -> bool:
        result = await self._conn.execute(
            pg_insert(notifications)
            .values(
                id=notification.id,
                order_id=notification.order_id,
                type=notification.type.value,
                recipient=notification.recipient,
                message=notification.message,
                created_at=notification.created_at,
            )
            .on_conflict_do_nothing(index_elements=[notifications.c.order_id])
            .returning(notifications.c.id)
        )
        return result.first() is not None

    async def list(self, order_id: UUID | None = None) -> Sequence[Notification]:
        query = select(notifications).order_by(notifications.c.created_at, notifications.c.id)
        if order_id is not None:
            query = query.where(notifications.c.order_id == order_id)
        return [
            Notification(
                id=row.id,
                order_id=row.order_id,
                type=NotificationType(row.type),
                recipient=row.recipient,
                message=row.message,
                created_at=row.created_at,
            )
            for row in await self._conn.execute(query)
        ]

"""Products and reservations: identity maps within a transaction, written at its commit.

A consumer batch of n events on the inventory would otherwise cost about four statements
per event (read the reservation, lock the products again, write them, write the
reservation). Here what a transaction read under its locks is kept and answered from, and
what it changed is written by ``flush`` (the unit of work's commit) in one round trip per
table, so a batch costs a fixed handful of statements.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any
from uuid import UUID

from core_saga.inventory import Product, Reservation, ReservationStatus
from sqlalchemy import any_, insert, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw
from adapters_postgres.identity import IdentityMap, OrderLocks
from adapters_postgres.sql import array_agg_ordered, array_param, insert_children, param
from adapters_postgres.sql import unnest_rows as _rows
from adapters_postgres.tables import products as product_table
from adapters_postgres.tables import reservation_lines, reservations


def _product(row: Any) -> Product:
    """From an asyncpg record or a SQLAlchemy row's ``_mapping``: read by column name."""
    return Product(row["id"], row["name"], row["stock"], row["reserved"], row["sold"])


_GET_PRODUCT = raw.Compiled(
    select(product_table).where(product_table.c.id == param(product_table.c.id))
)

_LOCK_PRODUCTS = raw.Compiled(
    select(product_table)
    .where(product_table.c.id == any_(array_param(product_table.c.id, "product_ids")))
    .order_by(product_table.c.id)
    .with_for_update()
)

_SAVE_PRODUCT = raw.Compiled(
    update(product_table)
    .where(product_table.c.id == param(product_table.c.id, "product_id"))
    .values(
        stock=param(product_table.c.stock, "new_stock"),
        reserved=param(product_table.c.reserved, "new_reserved"),
        sold=param(product_table.c.sold, "new_sold"),
    )
)


class PostgresProductRepository:
    """Products; ``lock`` takes row locks in ascending id order, so reservations never deadlock.

    A product locked in this transaction is not read again: ``lock`` and ``get`` return the
    same object, which the domain changes in place, and ``save`` only notes it for
    ``flush``.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._held: IdentityMap[Product] = IdentityMap()

    async def list(self) -> Sequence[Product]:
        rows = await self._conn.execute(select(product_table).order_by(product_table.c.id))
        return [_product(row._mapping) for row in rows]

    async def get(self, product_id: UUID) -> Product | None:
        if product_id in self._held.known:
            return self._held.known[product_id]
        rows = await raw.fetch_compiled(self._conn, _GET_PRODUCT, {"id": product_id})
        return _product(rows[0]) if rows else None

    async def lock(self, product_ids: Sequence[UUID]) -> dict[UUID, Product]:
        """One ``SELECT … ORDER BY id FOR UPDATE`` for those not locked yet (in sorted order)."""
        wanted = self._held.unread(product_ids)
        if wanted:
            rows = await raw.fetch_compiled(self._conn, _LOCK_PRODUCTS, {"product_ids": wanted})
            self._held.known.update((row["id"], _product(row)) for row in rows)
        known = self._held.known
        return {pid: product for pid in sorted(set(product_ids)) if (product := known.get(pid))}

    async def save(self, products: Sequence[Product]) -> None:
        for product in products:
            self._held.save(product.id, product)

    async def flush(self) -> None:
        """Write every saved product, in id order, in one round trip."""
        if not self._held.changed:
            return
        await raw.execute_many(
            self._conn,
            _SAVE_PRODUCT,
            [
                {
                    "product_id": product.id,
                    "new_stock": product.stock,
                    "new_reserved": product.reserved,
                    "new_sold": product.sold,
                }
                for _, product in sorted(self._held.changed.items())
            ],
        )
        self._held.written()

    def transaction_ended(self) -> None:
        self._held.clear()


_RESERVATION_ID = param(reservations.c.order_id)
_LINE_COLUMNS = (reservation_lines.c.product_id, reservation_lines.c.quantity)

_LINES = (
    select(
        *(
            array_agg_ordered(col, reservation_lines.c.product_id).label(f"line_{col.key}")
            for col in _LINE_COLUMNS
        )
    )
    .where(reservation_lines.c.order_id == reservations.c.order_id)
    .lateral("lines")
)
_WITH_LINES = select(reservations, *_LINES.c).select_from(reservations.join(_LINES, true()))
_GET_RESERVATION = raw.Compiled(_WITH_LINES.where(reservations.c.order_id == _RESERVATION_ID))
"""A reservation with its lines as arrays; ``_LOCK_RESERVATIONS`` reads a batch's at once
and locks them (safe in one statement: the order locks are taken first, and lines never
change once the reservation is added)."""
_LOCK_RESERVATIONS = raw.Compiled(
    _WITH_LINES.where(
        reservations.c.order_id == any_(array_param(reservations.c.order_id, "order_ids"))
    )
    .order_by(reservations.c.order_id)
    .with_for_update(of=reservations)
)

_ADD_RESERVATION = raw.Compiled(
    insert_children(reservation_lines, "lines", _RESERVATION_ID, *_LINE_COLUMNS).add_cte(
        insert(reservations)
        .values(order_id=_RESERVATION_ID, status=param(reservations.c.status))
        .cte("new_reservation")
    )
)

_SAVE_RESERVATION = raw.Compiled(
    update(reservations)
    .where(reservations.c.order_id == param(reservations.c.order_id, "reservation_id"))
    .values(status=param(reservations.c.status))
)


def _added(held: Reservation) -> dict[str, Any]:
    lines = _rows("lines", sorted(held.lines.items()), *_LINE_COLUMNS)
    return {"order_id": held.order_id, "status": held.status.value, **lines}


def _status_saved(held: Reservation) -> dict[str, Any]:
    return {"reservation_id": held.order_id, "status": held.status.value}


def _reservation(row: Any) -> Reservation:
    lines = zip(row["line_product_id"] or (), row["line_quantity"] or (), strict=True)
    return Reservation(
        order_id=row["order_id"], lines=dict(lines), status=ReservationStatus(row["status"])
    )


class PostgresReservationRepository:
    """What each order holds; a RELEASED row stays as the tombstone that blocks a re-reserve.

    Within a transaction, an order whose advisory lock is held is read once (``lock_all``
    reads a batch's at once, absent ones included): no one else can add or change its
    reservation until the commit. ``add`` and ``save`` only note the reservation for
    ``flush``.
    """

    def __init__(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        self._conn = conn
        self._locks = locks
        self._held: IdentityMap[Reservation] = IdentityMap()

    async def lock_all(self, order_ids: Collection[UUID]) -> None:
        """Lock the orders and read their reservations in one statement each."""
        wanted = await self._held.lock_unread(self._locks, order_ids)
        if not wanted:
            return
        rows = await raw.fetch_compiled(self._conn, _LOCK_RESERVATIONS, {"order_ids": wanted})
        self._held.known.update(dict.fromkeys(wanted))
        self._held.known.update((row["order_id"], _reservation(row)) for row in rows)

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Reservation | None:
        """With ``for_update`` the order id is locked even while no row exists yet, so a
        reservation and a release racing on one order take turns instead of colliding."""
        if order_id in self._held.known:
            return self._held.known[order_id]
        if for_update:
            await self.lock_all((order_id,))
            return self._held.known[order_id]
        rows = await raw.fetch_compiled(self._conn, _GET_RESERVATION, {"order_id": order_id})
        return _reservation(rows[0]) if rows else None

    async def add(self, reservation: Reservation) -> None:
        self._held.add(reservation.order_id, reservation)

    async def save(self, reservation: Reservation) -> None:
        """Persist the status; lines are fixed when the reservation is added."""
        self._held.save(reservation.order_id, reservation)

    async def flush(self) -> None:
        """Insert the new reservations, then update the changed ones: a round trip each."""
        await self._held.write(
            self._conn, _ADD_RESERVATION, _added, _SAVE_RESERVATION, _status_saved
        )

    def transaction_ended(self) -> None:
        self._held.clear()

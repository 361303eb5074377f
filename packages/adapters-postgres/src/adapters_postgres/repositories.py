"""Repositories: explicit SQL over the Core tables, mapped to the domain dataclasses by hand.

The hot statements are built once, at import, with typed ``bindparam`` placeholders: an
``execute`` then reuses the statement and its memoized cache key instead of building both
again. Batches travel as one array parameter per column (``unnest``) and a parent row and its
children are written or read in one statement, to save round trips.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from core_saga.messages import LineItem
from core_saga.orders import Order, OrderStatus, StatusChange
from sqlalchemy import (
    Column,
    ColumnElement,
    Insert,
    Integer,
    Table,
    any_,
    bindparam,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw
from adapters_postgres.identity import IdentityMap
from adapters_postgres.sql import array_agg_ordered as _array_agg
from adapters_postgres.sql import array_param as _array
from adapters_postgres.sql import every_column as _every_column
from adapters_postgres.sql import insert_children as _insert_children
from adapters_postgres.sql import param as _param
from adapters_postgres.sql import unnest_rows as _rows
from adapters_postgres.sql import where_given
from adapters_postgres.tables import (
    order_items,
    order_status_history,
    orders,
)

OPEN_STATUSES = (OrderStatus.PENDING.value, OrderStatus.STOCK_RESERVED.value)


# --- order database ------------------------------------------------------------------------

_ITEM_COLUMNS = (
    order_items.c.line_no,
    order_items.c.product_id,
    order_items.c.quantity,
    order_items.c.unit_price,
)
_HISTORY_COLUMNS = (
    order_status_history.c.seq,
    order_status_history.c.status,
    order_status_history.c.at,
    order_status_history.c.event_id,
    order_status_history.c.event_type,
)


_ORDER_ID = _param(orders.c.id, "order_id")


def new_order_statement(where: ColumnElement[bool] | None = None) -> Insert:
    """The order, its items and its history in one statement (the foreign keys are checked
    at its end, when the order row is there); each row only ``where`` holds, if given."""
    values = _every_column(orders, id=_ORDER_ID)
    row = where_given(select(*values.values()), where)
    order = insert(orders).from_select(list(values), row)
    items = _insert_children(order_items, "items", _ORDER_ID, *_ITEM_COLUMNS, where=where)
    history = _insert_children(
        order_status_history, "history", _ORDER_ID, *_HISTORY_COLUMNS, where=where
    )
    return history.add_cte(order.cte("new_order"), items.cte("new_items"))


_ADD_ORDER = raw.Compiled(new_order_statement())

_SAVE_ORDER = raw.Compiled(
    _insert_children(order_status_history, "history", _ORDER_ID, *_HISTORY_COLUMNS).add_cte(
        update(orders)
        .where(orders.c.id == _ORDER_ID)
        .values(
            status=_param(orders.c.status),
            updated_at=_param(orders.c.updated_at),
            cancellation_reason=_param(orders.c.cancellation_reason),
        )
        .cte("saved_order")
    )
)
"""The order's new state and its new history entries in one statement."""

_HISTORY_COUNT = (
    select(func.count())
    .select_from(order_status_history)
    .where(order_status_history.c.order_id == _ORDER_ID)
)


def _children_as_arrays(
    table: Table, columns: Sequence[Column[Any]], order_by: Column[Any], name: str
) -> Any:
    """A LATERAL row of one array per column (``<name>_<column>``) of the order's children.

    Beside the order row, so that a read is one statement however many orders it loads.
    """
    return (
        select(*(_array_agg(col, order_by).label(f"{name}_{col.key}") for col in columns))
        .where(table.c.order_id == orders.c.id)
        .lateral(f"{name}_rows")
    )


_ITEMS = _children_as_arrays(order_items, _ITEM_COLUMNS[1:], order_items.c.line_no, "item")
_HISTORY = _children_as_arrays(
    order_status_history, _HISTORY_COLUMNS[1:], order_status_history.c.seq, "history"
)
_WITH_CHILDREN = select(orders, *_ITEMS.c, *_HISTORY.c).select_from(
    orders.join(_ITEMS, true()).join(_HISTORY, true())
)
_GET_ORDER = _WITH_CHILDREN.where(orders.c.id == _ORDER_ID)
_GET_ORDERS = _WITH_CHILDREN.where(orders.c.id == any_(_array(orders.c.id, "order_ids")))

_LOCK_AND_GET_ORDER = _GET_ORDER.with_for_update(of=orders)
"""Lock and read in one statement. If the lock had to wait, the order row is the version
the other transaction committed but the history arrays are as of the statement's start:
``_consistent`` notices, and the order is read again under the lock."""
_LOCK_AND_GET_ORDERS = _GET_ORDERS.order_by(orders.c.id).with_for_update(of=orders)

_OVERDUE = (
    select(orders.c.id)
    .where(
        orders.c.status.in_(OPEN_STATUSES),
        orders.c.deadline_at <= _param(orders.c.deadline_at, "now"),
    )
    .order_by(orders.c.deadline_at)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
)


# The reads every POST and order batch run, on the driver (``adapters_postgres.raw``): rows
# come back as asyncpg records.
_READ_ORDER = raw.Compiled(_GET_ORDER)
_READ_ORDERS = raw.Compiled(_GET_ORDERS)
_LOCK_AND_READ_ORDER = raw.Compiled(_LOCK_AND_GET_ORDER)
_LOCK_AND_READ_ORDERS = raw.Compiled(_LOCK_AND_GET_ORDERS)


def _new_history(order: Order, stored: int) -> dict[str, Any]:
    """The parameters that append the history entries past the ``stored`` first ones."""
    new = [
        (seq, change.status.value, change.at, change.event_id, change.event_type)
        for seq, change in enumerate(order.history)
        if seq >= stored
    ]
    return _rows("history", new, *_HISTORY_COLUMNS)


def new_order_params(order: Order) -> dict[str, Any]:
    """The parameters of ``new_order_statement``: the order, its items and its history."""
    items = [
        (line_no, item.product_id, item.quantity, item.unit_price)
        for line_no, item in enumerate(order.items)
    ]
    return {
        "order_id": order.id,
        "customer_id": order.customer_id,
        "status": order.status.value,
        "currency": order.currency,
        "total_amount": order.total_amount,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "deadline_at": order.deadline_at,
        "cancellation_reason": order.cancellation_reason,
        **_rows("items", items, *_ITEM_COLUMNS),
        **_new_history(order, 0),
    }


def _consistent(row: Any) -> bool:
    """Whether the history read ends with the order's current state.

    Every status change appends an entry with the order's new status and ``updated_at``,
    so history that misses a committed change ends in another status.
    """
    statuses: Sequence[str] = row["history_status"] or ()
    times: Sequence[datetime] = row["history_at"] or ()
    return bool(statuses) and statuses[-1] == row["status"] and times[-1] == row["updated_at"]


def _order(row: Any) -> Order:
    """An order from a row of ``_WITH_CHILDREN`` (an asyncpg record: read by column name)."""
    items = zip(
        row["item_product_id"] or (),
        row["item_quantity"] or (),
        row["item_unit_price"] or (),
        strict=True,
    )
    history = zip(
        row["history_status"] or (),
        row["history_at"] or (),
        row["history_event_id"] or (),
        row["history_event_type"] or (),
        strict=True,
    )
    return Order(
        id=row["id"],
        customer_id=row["customer_id"],
        items=tuple(
            LineItem(product_id=product_id, quantity=quantity, unit_price=unit_price)
            for product_id, quantity, unit_price in items
        ),
        currency=row["currency"],
        created_at=row["created_at"],
        deadline_at=row["deadline_at"],
        status=OrderStatus(row["status"]),
        updated_at=row["updated_at"],
        cancellation_reason=row["cancellation_reason"],
        history=[
            StatusChange(OrderStatus(status), at, event_id, event_type)
            for status, at, event_id, event_type in history
        ],
    )


class PostgresOrderRepository:
    """Orders with their items and status history (append-only, numbered per order).

    Within a transaction it is an identity map: an order read under its lock is kept, and
    ``get`` answers from it; ``save`` only notes the order, and ``flush`` (the unit of
    work's commit) writes every noted order in one round trip. A consumer batch of n events
    so costs one read (``lock_all``) and one write, not n of each.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._stored_history: dict[UUID, int] = {}  # entries already in the table, per order
        self._held: IdentityMap[Order] = IdentityMap()  # read under their row locks, or saved

    async def add(self, order: Order) -> None:
        await raw.fetch_compiled(self._conn, _ADD_ORDER, new_order_params(order))
        self._stored_history[order.id] = len(order.history)

    async def lock_all(self, order_ids: Collection[UUID]) -> None:
        """Lock and read the orders in one statement (in id order); ``get`` returns them."""
        wanted = self._held.unread(order_ids)
        if not wanted:
            return
        rows = await raw.fetch_compiled(self._conn, _LOCK_AND_READ_ORDERS, {"order_ids": wanted})
        stale = [row["id"] for row in rows if not _consistent(row)]
        if stale:  # some lock waited: read those again, under the lock now held
            rows = [row for row in rows if _consistent(row)]
            rows += await raw.fetch_compiled(self._conn, _READ_ORDERS, {"order_ids": stale})
        self._held.known.update((row["id"], self._loaded(row)) for row in rows)

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Order | None:
        if (known := self._held.known.get(order_id)) is not None:
            return known
        query = _LOCK_AND_READ_ORDER if for_update else _READ_ORDER
        rows = await raw.fetch_compiled(self._conn, query, {"order_id": order_id})
        if rows and not _consistent(rows[0]):  # waited for the lock: read again
            rows = await raw.fetch_compiled(self._conn, _READ_ORDER, {"order_id": order_id})
        if not rows:
            return None
        row = rows[0]
        order = self._loaded(row)
        if for_update:
            self._held.known[order.id] = order
        return order

    async def save(self, order: Order) -> None:
        self._held.save(order.id, order)

    async def flush(self) -> None:
        """Write every saved order: one statement per order, sent in one round trip."""
        unsaved = list(self._held.changed.values())
        if not unsaved:
            return
        params = []
        for order in unsaved:
            stored = self._stored_history.get(order.id)
            if stored is None:  # saved without being read in this unit of work
                stored = await self._conn.scalar(_HISTORY_COUNT, {"order_id": order.id})
            params.append(
                {
                    "order_id": order.id,
                    "status": order.status.value,
                    "updated_at": order.updated_at,
                    "cancellation_reason": order.cancellation_reason,
                    **_new_history(order, int(stored or 0)),
                }
            )
        await raw.execute_many(self._conn, _SAVE_ORDER, params)
        for order in unsaved:
            self._stored_history[order.id] = len(order.history)
        self._held.written()

    def transaction_ended(self) -> None:
        """Forget what was locked and unsaved: the locks are gone, and so is unsaved work."""
        self._held.clear()

    async def overdue(self, now: datetime, limit: int) -> Sequence[Order]:
        """``SKIP LOCKED``: replicas sweeping at once each take different orders."""
        ids = (await self._conn.scalars(_OVERDUE, {"now": now, "limit": limit})).all()
        if not ids:
            return []
        rows = await raw.fetch_compiled(self._conn, _READ_ORDERS, {"order_ids": list(ids)})
        loaded = {order.id: order for order in map(self._loaded, rows)}
        self._held.known.update(loaded)
        return [loaded[order_id] for order_id in ids]  # by deadline, as locked

    def _loaded(self, row: Any) -> Order:
        order = _order(row)
        self._stored_history[order.id] = len(order.history)
        return order

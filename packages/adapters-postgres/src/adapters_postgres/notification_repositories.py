"""The notification database: notifications (one per order) and those not yet sent."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from core_saga.notifications import Notification, NotificationType
from core_saga.ports import LIST_LIMIT, Position
from sqlalchemy import Insert, Select, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw
from adapters_postgres.identity import IdentityMap, OrderLocks
from adapters_postgres.sql import (
    array_param,
    every_column,
    insert_unnested,
    newest_page,
    oldest_waiting,
    unnest_params,
    unnest_rows,
    waiting_params,
)
from adapters_postgres.tables import notifications, notifications_unsent

_COLUMNS = (
    notifications.c.id,
    notifications.c.order_id,
    notifications.c.type,
    notifications.c.recipient,
    notifications.c.message,
    notifications.c.created_at,
)


def _and_unsent(added: Insert) -> Insert:
    """``added``, and in the same statement a ``notifications_unsent`` row for each
    notification it inserted (returning its id): stored and to be sent, atomically."""
    inserted = added.returning(notifications.c.id, notifications.c.created_at).cte("inserted")
    unsent = select(inserted.c.id, inserted.c.created_at)
    return (
        insert(notifications_unsent)
        .from_select(["notification_id", "created_at"], unsent)
        .returning(notifications_unsent.c.notification_id)
    )


_ADD = raw.Compiled(
    _and_unsent(
        pg_insert(notifications)
        .values(every_column(notifications))
        .on_conflict_do_nothing(index_elements=[notifications.c.order_id])
    )
)

_ADD_MANY = raw.Compiled(
    _and_unsent(insert_unnested(notifications, "added", *_COLUMNS, unique=notifications.c.order_id))
)
"""Every notification a transaction added, in one statement at its commit. Their orders
were read under their locks and had none, so nothing conflicts: ``ON CONFLICT`` is only a
safety net (an ``add`` that did not hold its order, racing)."""

_WANTED = unnest_params("wanted", notifications.c.order_id)
_OF_ORDERS = raw.Compiled(
    select(_WANTED.c.order_id.label("wanted"), *notifications.c).select_from(
        _WANTED.outerjoin(notifications, notifications.c.order_id == _WANTED.c.order_id)
    )
)
"""Each wanted order with its notification (NULLs if none)."""

_UNSENT = raw.Compiled(
    oldest_waiting(
        select(notifications).join(
            notifications_unsent, notifications_unsent.c.notification_id == notifications.c.id
        ),
        notifications_unsent.c.created_at,
        notifications_unsent.c.notification_id,
    )
)
"""Read along ``notifications_unsent_created_at_idx``; a notification's unsent row has its
``created_at``."""

_MARK_SENT = raw.Compiled(
    delete(notifications_unsent).where(
        notifications_unsent.c.notification_id
        == array_param(notifications_unsent.c.notification_id, "sent").any_()
    )
)


def _with_sent(query: Select[Any]) -> Select[Any]:
    """Each notification with whether it was sent: no ``notifications_unsent`` row."""
    unsent = notifications_unsent.c.notification_id
    return query.outerjoin(notifications_unsent, unsent == notifications.c.id).add_columns(
        unsent.is_(None).label("sent")
    )


def _notification(row: Any, *, sent: bool = False) -> Notification:
    """From an asyncpg record or a SQLAlchemy row's ``_mapping``: read by column name."""
    return Notification(
        id=row["id"],
        order_id=row["order_id"],
        type=NotificationType(row["type"]),
        recipient=row["recipient"],
        message=row["message"],
        created_at=row["created_at"],
        sent=sent,
    )


def _params(notification: Notification) -> dict[str, Any]:
    """The values of its row, by column name."""
    return {
        "id": notification.id,
        "order_id": notification.order_id,
        "type": notification.type.value,
        "recipient": notification.recipient,
        "message": notification.message,
        "created_at": notification.created_at,
    }


def _row(notification: Notification) -> tuple[Any, ...]:
    """The values of its row, in the order of ``_COLUMNS`` (for ``unnest``)."""
    params = _params(notification)
    return tuple(params[column.key] for column in _COLUMNS)


class PostgresNotificationRepository:
    """Notifications; the unique order id makes a second one for the same order a no-op.

    For the orders a transaction holds (``lock_all``: the unit of work's ``hold``), whether
    one exists is read once, under the orders' locks; ``add`` then answers from memory and
    ``flush`` (the unit of work's commit) inserts what was added in one statement, so a
    consumer batch costs a fixed handful of statements, not one per event. ``add`` for an
    order not held inserts at once, as nothing keeps another transaction off it. Each
    insert also records the notification as unsent (``notifications_unsent``).
    """

    def __init__(self, conn: AsyncConnection, locks: OrderLocks) -> None:
        self._conn = conn
        self._locks = locks
        self._held: IdentityMap[Notification] = IdentityMap()

    async def lock_all(self, order_ids: Collection[UUID]) -> None:
        """Lock the orders (ascending keys), then read their notifications in one statement.

        Two statements, not one: a read in the statement that waited for a lock would not
        see what the transaction holding it committed.
        """
        wanted = await self._held.lock_unread(self._locks, order_ids)
        if not wanted:
            return
        rows = await raw.fetch_compiled(self._conn, _OF_ORDERS, {"wanted_order_id": wanted})
        for row in rows:
            self._held.known[row["wanted"]] = None if row["id"] is None else _notification(row)

    async def add(self, notification: Notification) -> bool:
        order_id = notification.order_id
        if order_id in self._held.known:
            if self._held.known[order_id] is not None:
                return False
            self._held.add(order_id, notification)
            return True
        # Not held: lock it first, or a holder's insert, deferred to its commit, would find
        # this one there and be dropped, while both callers were told theirs was stored.
        await self._locks.take((order_id,))
        return bool(await raw.fetch_compiled(self._conn, _ADD, _params(notification)))

    async def list(
        self,
        order_id: UUID | None = None,
        *,
        limit: int = LIST_LIMIT,
        before: Position | None = None,
    ) -> Sequence[Notification]:
        await self.flush()  # the transaction reads what it added
        rows = await newest_page(
            self._conn, notifications, order_id, limit, before, joined=_with_sent
        )
        return [_notification(row, sent=row["sent"]) for row in rows]

    async def unsent(
        self, before: datetime, limit: int, *, after: Position | None = None
    ) -> Sequence[Notification]:
        await self.flush()
        params = waiting_params(before, limit, after)
        return [_notification(row) for row in await raw.fetch_compiled(self._conn, _UNSENT, params)]

    async def mark_sent(self, notifications: Collection[Notification]) -> None:
        sent = sorted(notification.id for notification in notifications)
        await raw.fetch_compiled(self._conn, _MARK_SENT, {"sent": sent})

    async def flush(self) -> None:
        """Insert the notifications added to held orders: one statement for all of them,
        in order-id order (two writers' unique-index entries then never wait in a cycle)."""
        if self._held.new:
            added = [_row(self._held.new[key]) for key in sorted(self._held.new)]
            params = unnest_rows("added", added, *_COLUMNS)
            await raw.fetch_compiled(self._conn, _ADD_MANY, params)
        self._held.written()

    def transaction_ended(self) -> None:
        self._held.clear()

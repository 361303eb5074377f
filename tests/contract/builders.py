"""What the contract tests store: orders, envelopes and the like, and a waiting check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID, uuid4

from core_saga.inventory import SEED_PRODUCTS, Reservation, ReservationStatus
from core_saga.messages import Envelope, LineItem, OrderCreated
from core_saga.notifications import Notification, NotificationType
from core_saga.orders import Order
from core_saga.payments import Payment, PaymentStatus
from core_saga.ports import Position

MOUSE, KEYBOARD, HUB = (product.id for product in SEED_PRODUCTS[:3])

# Long enough for a transaction that does not wait to finish; a waiting one never does.
SETTLE = 0.1


def order_created(at: datetime, order_id: UUID | None = None) -> Envelope:
    order_id = order_id or uuid4()
    item = LineItem(product_id=MOUSE, quantity=2, unit_price=Decimal("12.50"))
    return Envelope(
        event_id=uuid4(),
        occurred_at=at,
        correlation_id=order_id,
        causation_id=order_id,
        payload=OrderCreated(
            order_id=order_id,
            customer_id=uuid4(),
            items=(item,),
            total_amount=Decimal("25.00"),
            currency="EUR",
        ),
    )


def new_order(at: datetime, timeout: timedelta = timedelta(seconds=30)) -> Order:
    items = (
        LineItem(product_id=KEYBOARD, quantity=1, unit_price=Decimal("89.90")),
        LineItem(product_id=MOUSE, quantity=3, unit_price=Decimal("19.99")),
    )
    return Order.place(uuid4(), uuid4(), items, "EUR", at, uuid4(), timeout)


def new_reservation(order_id: UUID | None = None) -> Reservation:
    return Reservation(
        order_id=order_id or uuid4(),
        lines={MOUSE: 2, HUB: 1},
        status=ReservationStatus.RESERVED,
    )


def new_payment(at: datetime, order_id: UUID | None = None) -> Payment:
    return Payment(
        id=uuid4(),
        order_id=order_id or uuid4(),
        amount=Decimal("149.87"),
        currency="EUR",
        status=PaymentStatus.SUCCEEDED,
        reason=None,
        created_at=at,
        updated_at=at,
    )


def new_notification(at: datetime, order_id: UUID | None = None) -> Notification:
    return Notification(
        id=uuid4(),
        order_id=order_id or uuid4(),
        type=NotificationType.ORDER_CONFIRMED,
        recipient="customer@example.com",
        message="Your order is confirmed.",
        created_at=at,
    )


Listed = TypeVar("Listed", Payment, Notification)


def position(row: Payment | Notification) -> Position:
    """Where a list page that ends at ``row`` ends."""
    return row.created_at, row.id


async def read_back(
    read: Callable[[Position | None], Awaitable[Sequence[Listed]]], most: int = 100
) -> list[Sequence[Listed]]:
    """The pages ``read`` returns, newest first, each read before the first (oldest) row of the
    last, until one is empty; at most ``most``, so a cursor that is ignored fails, not hangs."""
    pages: list[Sequence[Listed]] = []
    before: Position | None = None
    while len(pages) < most and (page := await read(before)):
        pages.append(page)
        before = position(page[0])
    return pages


async def assert_waiting(task: asyncio.Task[Any]) -> None:
    """``task`` has not finished a while later: it waits for another transaction to end."""
    await asyncio.sleep(SETTLE)
    assert not task.done(), "the second transaction did not wait for the first"

"""The order aggregate: its state machine, the saga deadline, and what each event decides."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final
from uuid import UUID

from core_saga.messages import LineItem

DEFAULT_SAGA_TIMEOUT: Final = timedelta(seconds=30)
TIMEOUT_REASON: Final = "timeout"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    STOCK_RESERVED = "STOCK_RESERVED"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (OrderStatus.CONFIRMED, OrderStatus.CANCELLED)


@dataclass(frozen=True)
class StatusChange:
    """One entry of an order's history: the status it reached and the event that did it."""

    status: OrderStatus
    at: datetime
    event_id: UUID
    event_type: str


def order_total(items: tuple[LineItem, ...]) -> Decimal:
    return sum((item.unit_price * item.quantity for item in items), Decimal("0"))


@dataclass
class Order:
    """An order and its saga state. Methods apply one event and say whether it applied."""

    id: UUID
    customer_id: UUID
    items: tuple[LineItem, ...]
    currency: str
    created_at: datetime
    deadline_at: datetime
    status: OrderStatus = OrderStatus.PENDING
    updated_at: datetime | None = None
    cancellation_reason: str | None = None
    history: list[StatusChange] = field(default_factory=list)

    @property
    def total_amount(self) -> Decimal:
        return order_total(self.items)

    @classmethod
    def place(
        cls,
        order_id: UUID,
        customer_id: UUID,
        items: tuple[LineItem, ...],
        currency: str,
        now: datetime,
        event_id: UUID,
        timeout: timedelta = DEFAULT_SAGA_TIMEOUT,
    ) -> Order:
        order = cls(
            id=order_id,
            customer_id=customer_id,
            items=items,
            currency=currency,
            created_at=now,
            deadline_at=now + timeout,
            updated_at=now,
        )
        order.history.append(StatusChange(OrderStatus.PENDING, now, event_id, "OrderCreated"))
        return order

    def _move(self, status: OrderStatus, now: datetime, event_id: UUID, event_type: str) -> None:
        self.status = status
        self.updated_at = now
        self.history.append(StatusChange(status, now, event_id, event_type))

    def stock_reserved(self, now: datetime, event_id: UUID) -> bool:
        """PENDING → STOCK_RESERVED; anything later absorbs it."""
        if self.status is not OrderStatus.PENDING:
            return False
        self._move(OrderStatus.STOCK_RESERVED, now, event_id, "StockReserved")
        return True

    def payment_succeeded(self, now: datetime, event_id: UUID) -> bool:
        """→ CONFIRMED, also from PENDING: the payment may overtake the reservation."""
        if self.status.terminal:
            return False
        self._move(OrderStatus.CONFIRMED, now, event_id, "PaymentSucceeded")
        return True

    def cancel(self, reason: str, now: datetime, event_id: UUID, event_type: str) -> bool:
        """PENDING or STOCK_RESERVED → CANCELLED; terminal states absorb it."""
        if self.status.terminal:
            return False
        self.cancellation_reason = reason
        self._move(OrderStatus.CANCELLED, now, event_id, event_type)
        return True

    def overdue(self, now: datetime) -> bool:
        return not self.status.terminal and now >= self.deadline_at

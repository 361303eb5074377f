"""The order state machine (DESIGN §3): transitions, absorbing terminal states, deadline."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from core_saga.messages import LineItem
from core_saga.orders import DEFAULT_SAGA_TIMEOUT, Order, OrderStatus

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MOUSE = UUID("11111111-1111-1111-1111-111111111111")


def placed() -> Order:
    line = LineItem(product_id=MOUSE, quantity=3, unit_price=Decimal("0.10"))
    return Order.place(uuid4(), uuid4(), (line,), "EUR", NOW, uuid4())


def in_status(status: OrderStatus) -> Order:
    order = placed()
    if status is OrderStatus.STOCK_RESERVED:
        order.stock_reserved(NOW, uuid4())
    elif status is OrderStatus.CONFIRMED:
        order.payment_succeeded(NOW, uuid4())
    elif status is OrderStatus.CANCELLED:
        order.cancel("timeout", NOW, uuid4(), "OrderCancelled")
    assert order.status is status
    return order


Step = Callable[[Order], bool]


def RESERVE(order: Order) -> bool:
    return order.stock_reserved(NOW, uuid4())


def PAY(order: Order) -> bool:
    return order.payment_succeeded(NOW, uuid4())


def CANCEL(order: Order) -> bool:
    return order.cancel("declined", NOW, uuid4(), "PaymentFailed")


P, R, C, X = (
    OrderStatus.PENDING,
    OrderStatus.STOCK_RESERVED,
    OrderStatus.CONFIRMED,
    OrderStatus.CANCELLED,
)


@pytest.mark.parametrize(
    ("start", "step", "applied", "end"),
    [
        (P, RESERVE, True, R),
        (P, PAY, True, C),  # the payment may overtake the reservation
        (P, CANCEL, True, X),
        (R, RESERVE, False, R),
        (R, PAY, True, C),
        (R, CANCEL, True, X),
        (C, RESERVE, False, C),
        (C, PAY, False, C),
        (C, CANCEL, False, C),
        (X, RESERVE, False, X),
        (X, PAY, False, X),
        (X, CANCEL, False, X),
    ],
)
def test_transitions(start: OrderStatus, step: Step, applied: bool, end: OrderStatus) -> None:
    order = in_status(start)
    history = len(order.history)
    assert step(order) is applied
    assert order.status is end
    assert len(order.history) == history + (1 if applied else 0)


def test_placing_starts_pending_with_a_deadline_and_history() -> None:
    order = placed()
    assert order.status is OrderStatus.PENDING
    assert order.deadline_at == NOW + DEFAULT_SAGA_TIMEOUT
    assert [(h.status, h.event_type) for h in order.history] == [(P, "OrderCreated")]


def test_total_is_exact_decimal() -> None:
    assert placed().total_amount == Decimal("0.30")


def test_cancel_keeps_the_first_reason() -> None:
    order = in_status(X)
    assert not order.cancel("later", NOW, uuid4(), "PaymentFailed")
    assert order.cancellation_reason == "timeout"


def test_overdue_only_from_the_deadline_and_only_while_not_terminal() -> None:
    order = placed()
    assert not order.overdue(NOW + DEFAULT_SAGA_TIMEOUT - timedelta(microseconds=1))
    assert order.overdue(NOW + DEFAULT_SAGA_TIMEOUT)
    order.stock_reserved(NOW, uuid4())
    assert order.overdue(NOW + DEFAULT_SAGA_TIMEOUT)
    order.payment_succeeded(NOW, uuid4())
    assert not order.overdue(NOW + timedelta(days=1))


@pytest.mark.parametrize("status", list(OrderStatus))
def test_terminal_states(status: OrderStatus) -> None:
    assert status.terminal is (status in (C, X))

"""The order service: idempotent placement, the saga rules it applies, the deadline sweep."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.order import OrderService, PlaceOrder, order_view, request_hash
from core_saga.inventory import SEED_PRODUCTS
from core_saga.memory import ManualClock, MemoryOrderDatabase, order_request
from core_saga.messages import (
    Envelope,
    Event,
    LineItem,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    PaymentFailed,
    PaymentSucceeded,
    StockRejected,
    StockReleaseRequested,
    StockReserved,
    decode,
)
from core_saga.orders import Order, OrderStatus
from core_saga.ports import InfrastructureError
from pydantic import ValidationError

pytestmark = pytest.mark.unit

MOUSE, KEYBOARD = SEED_PRODUCTS[0].id, SEED_PRODUCTS[1].id
KEY_ORDER_A = (
    '{"customerId": "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa", "currency": "EUR", "items": '
    '[{"productId": "11111111-1111-1111-1111-111111111111", "quantity": 2, "unitPrice": 10.50}]}'
)
KEY_ORDER_B = (
    '{ "items":[{"unitPrice":10.5,"quantity":2,'
    '"productId":"11111111-1111-1111-1111-111111111111"}],'
    '"customerId":"AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA"}'
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db(clock: ManualClock) -> MemoryOrderDatabase:
    return MemoryOrderDatabase(clock)


@pytest.fixture
def service(db: MemoryOrderDatabase, clock: ManualClock) -> OrderService:
    return OrderService(db.unit_of_work, clock)


def sent(db: MemoryOrderDatabase) -> list[Envelope]:
    return [decode(row.message.value) for row in db.outbox.rows]


async def stored(db: MemoryOrderDatabase, order_id: UUID) -> Order:
    async with db.unit_of_work() as uow:
        order = await uow.orders.get(order_id)
    assert order is not None
    return order


async def place(service: OrderService) -> UUID:
    outcome = await service.place_order(order_request({MOUSE: 2, KEYBOARD: 1}), str(uuid4()))
    assert outcome.kind == "created"
    return UUID(outcome.body["id"])


# --- placing ------------------------------------------------------------------------------


async def test_place_order_creates_the_order_its_event_and_the_response(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    outcome = await service.place_order(PlaceOrder.model_validate_json(KEY_ORDER_A), "k1")
    assert (outcome.kind, outcome.status_code) == ("created", 201)
    order = await stored(db, UUID(outcome.body["id"]))
    assert outcome.body == order_view(order)
    assert outcome.body == {
        "id": str(order.id),
        "customerId": "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa",
        "status": "PENDING",
        "totalAmount": 21,
        "currency": "EUR",
        "items": [{"productId": str(MOUSE), "quantity": 2, "unitPrice": 10.5}],
        "createdAt": "2026-01-01T00:00:00.000000Z",
        "updatedAt": "2026-01-01T00:00:00.000000Z",
        "cancellationReason": None,
    }
    [created] = sent(db)
    assert isinstance(created.payload, OrderCreated)
    assert created.payload.total_amount == Decimal("21.00")
    assert created.correlation_id == order.id
    assert created.occurred_at == clock.now()
    assert order.history[0].event_id == created.event_id


async def test_same_key_and_same_request_replays_the_stored_body(
    service: OrderService, db: MemoryOrderDatabase
) -> None:
    first = await service.place_order(PlaceOrder.model_validate_json(KEY_ORDER_A), "k1")
    again = await service.place_order(PlaceOrder.model_validate_json(KEY_ORDER_B), "k1")
    assert (again.kind, again.status_code, again.body) == ("replayed", 200, first.body)
    assert len(db.orders.rows) == 1
    assert len(db.outbox.rows) == 1


async def test_same_key_and_another_request_is_a_conflict(
    service: OrderService, db: MemoryOrderDatabase
) -> None:
    await service.place_order(order_request({MOUSE: 1}), "k1")
    conflict = await service.place_order(order_request({MOUSE: 2}), "k1")
    assert (conflict.kind, conflict.status_code) == ("conflict", 409)
    assert conflict.body["status"] == 409
    assert len(db.orders.rows) == 1


async def test_an_expired_key_places_a_new_order(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    request = order_request({MOUSE: 1})
    await service.place_order(request, "k1")
    clock.advance(timedelta(hours=24))
    assert (await service.place_order(request, "k1")).kind == "created"
    assert len(db.orders.rows) == 2


async def test_concurrent_requests_with_one_key_create_one_order(
    service: OrderService, db: MemoryOrderDatabase
) -> None:
    request = order_request({MOUSE: 1})
    outcomes = await asyncio.gather(*(service.place_order(request, "k1") for _ in range(5)))
    assert sorted(outcome.kind for outcome in outcomes) == ["created"] + ["replayed"] * 4
    assert len({str(outcome.body) for outcome in outcomes}) == 1
    assert len(db.orders.rows) == 1


def test_request_hash_ignores_key_order_whitespace_and_spelling() -> None:
    a = PlaceOrder.model_validate_json(KEY_ORDER_A)
    b = PlaceOrder.model_validate_json(KEY_ORDER_B)
    assert request_hash(a) == request_hash(b)
    assert len(request_hash(a)) == 64
    other = PlaceOrder.model_validate_json(KEY_ORDER_A.replace('"quantity": 2', '"quantity": 3'))
    assert request_hash(other) != request_hash(a)


@pytest.mark.parametrize(
    "change",
    [
        {"items": []},
        {"items": [{"productId": str(MOUSE), "quantity": 1, "unitPrice": 1}] * 101},
        {"items": [{"productId": str(MOUSE), "quantity": 0, "unitPrice": 1}]},
        {"items": [{"productId": str(MOUSE), "quantity": 10_001, "unitPrice": 1}]},
        {"items": [{"productId": str(MOUSE), "quantity": 1, "unitPrice": 0}]},
        {"items": [{"productId": str(MOUSE), "quantity": 1, "unitPrice": 1.005}]},
        {"items": [{"productId": str(MOUSE), "quantity": 10_000, "unitPrice": 999999999999}]},
        {"items": [{"productId": "mouse", "quantity": 1, "unitPrice": 1}]},
        {"currency": "eur"},
        {"customerId": "nobody"},
    ],
)
def test_invalid_requests_are_refused(change: dict[str, object]) -> None:
    line = {"productId": str(MOUSE), "quantity": 1, "unitPrice": 1}
    body = {"customerId": str(uuid4()), "items": [line]}
    PlaceOrder.model_validate(body)  # valid as it stands
    with pytest.raises(ValidationError):
        PlaceOrder.model_validate({**body, **change})


def test_currency_defaults_to_eur() -> None:
    line = {"productId": str(MOUSE), "quantity": 1, "unitPrice": 1}
    assert (
        PlaceOrder.model_validate({"customerId": str(uuid4()), "items": [line]}).currency == "EUR"
    )


# --- the saga rules -----------------------------------------------------------------------


def reserved(order_id: UUID) -> StockReserved:
    line = LineItem(product_id=MOUSE, quantity=2, unit_price=Decimal("10.00"))
    return StockReserved(order_id=order_id, items=(line,), total_amount=20, currency="EUR")


def succeeded(order_id: UUID) -> PaymentSucceeded:
    return PaymentSucceeded(order_id=order_id, payment_id=uuid4(), amount=20)


def failed(order_id: UUID) -> PaymentFailed:
    return PaymentFailed(order_id=order_id, amount=20, reason="Payment declined by provider")


def rejected(order_id: UUID) -> StockRejected:
    return StockRejected(order_id=order_id, reason="Insufficient stock for product: Mouse")


async def deliver(service: OrderService, clock: ManualClock, event: Event) -> Envelope:
    envelope = new_envelope(event, clock.now(), None)
    await service.handle(envelope)
    return envelope


@pytest.mark.parametrize(
    ("before", "event", "status", "emitted"),
    [
        ([], reserved, OrderStatus.STOCK_RESERVED, []),
        ([], succeeded, OrderStatus.CONFIRMED, ["OrderConfirmed"]),
        ([reserved], succeeded, OrderStatus.CONFIRMED, ["OrderConfirmed"]),
        ([reserved], failed, OrderStatus.CANCELLED, ["OrderCancelled", "StockReleaseRequested"]),
        ([], rejected, OrderStatus.CANCELLED, ["OrderCancelled"]),
        ([succeeded], reserved, OrderStatus.CONFIRMED, []),
        ([reserved, succeeded], failed, OrderStatus.CONFIRMED, []),
        ([rejected], reserved, OrderStatus.CANCELLED, []),
        ([reserved, failed], succeeded, OrderStatus.CANCELLED, []),
    ],
)
async def test_saga_rules(
    service: OrderService,
    db: MemoryOrderDatabase,
    clock: ManualClock,
    before: list[type],
    event: type,
    status: OrderStatus,
    emitted: list[str],
) -> None:
    order_id = await place(service)
    for earlier in before:
        await deliver(service, clock, earlier(order_id))
    already = len(db.outbox.rows)
    cause = await deliver(service, clock, event(order_id))
    assert (await stored(db, order_id)).status is status
    new = sent(db)[already:]
    assert [envelope.event_type for envelope in new] == emitted
    for envelope in new:
        assert (envelope.correlation_id, envelope.causation_id) == (order_id, cause.event_id)


async def test_outcome_events_carry_the_customer_and_the_reason(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    order_id = await place(service)
    customer = (await stored(db, order_id)).customer_id
    await deliver(service, clock, reserved(order_id))
    await deliver(service, clock, failed(order_id))
    cancelled, release = sent(db)[1:]
    assert isinstance(cancelled.payload, OrderCancelled)
    assert (cancelled.payload.customer_id, cancelled.payload.reason) == (
        customer,
        "Payment declined by provider",
    )
    assert isinstance(release.payload, StockReleaseRequested)
    assert release.payload.items == (await stored(db, order_id)).items
    assert (await stored(db, order_id)).cancellation_reason == "Payment declined by provider"

    other = await place(service)
    await deliver(service, clock, succeeded(other))
    confirmed = sent(db)[-1].payload
    assert isinstance(confirmed, OrderConfirmed)
    assert confirmed.customer_id == (await stored(db, other)).customer_id


async def test_events_for_unknown_orders_are_recorded_and_ignored(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    envelope = await deliver(service, clock, succeeded(uuid4()))
    assert envelope.event_id in db.processed_events.rows
    assert db.outbox.rows == []


async def test_event_types_outside_the_subscriptions_are_skipped(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    envelope = await deliver(service, clock, OrderConfirmed(order_id=uuid4()))
    assert envelope.event_id not in db.processed_events.rows


async def test_a_duplicate_is_recorded_once_and_applied_once(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    order_id = await place(service)
    envelope = await deliver(service, clock, reserved(order_id))
    await service.handle(envelope)
    history = (await stored(db, order_id)).history
    assert [change.event_type for change in history] == ["OrderCreated", "StockReserved"]


# --- the deadline -------------------------------------------------------------------------


async def test_sweep_cancels_overdue_orders_with_timeout_and_a_release(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    order_id = await place(service)
    clock.advance(timedelta(seconds=29))
    assert await service.sweep_deadlines() == 0
    clock.advance(timedelta(seconds=1))
    assert await service.sweep_deadlines() == 1
    order = await stored(db, order_id)
    assert (order.status, order.cancellation_reason) == (OrderStatus.CANCELLED, "timeout")
    cancelled, release = sent(db)[1:]
    assert isinstance(cancelled.payload, OrderCancelled)
    assert cancelled.payload.reason == "timeout"
    assert cancelled.payload.customer_id == order.customer_id
    assert isinstance(release.payload, StockReleaseRequested)
    assert order.history[-1].event_id == cancelled.event_id
    assert await service.sweep_deadlines() == 0


async def test_sweep_leaves_terminal_orders_and_respects_the_limit(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    confirmed = await place(service)
    await deliver(service, clock, succeeded(confirmed))
    for _ in range(3):
        await place(service)
    clock.advance(timedelta(minutes=1))
    assert await service.sweep_deadlines(limit=2) == 2
    assert await service.sweep_deadlines(limit=2) == 1
    assert (await stored(db, confirmed)).status is OrderStatus.CONFIRMED


async def test_a_backlog_of_overdue_orders_is_swept_in_one_tick(
    service: OrderService, db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    """What the service runs once per ``DEADLINE_SWEEP_INTERVAL``: every overdue order, not
    ``limit`` a tick."""
    placed = [await place(service) for _ in range(25)]
    clock.advance(timedelta(minutes=1))
    assert await service.sweep_overdue(limit=10) == 25
    assert {(await stored(db, order_id)).status for order_id in placed} == {OrderStatus.CANCELLED}
    assert await service.sweep_overdue(limit=10) == 0


async def test_the_saga_timeout_is_configurable(
    db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    service = OrderService(db.unit_of_work, clock, saga_timeout=timedelta(seconds=5))
    await place(service)
    clock.advance(timedelta(seconds=5))
    assert await service.sweep_deadlines() == 1


async def test_each_order_that_ends_is_reported_once_after_its_commit(
    db: MemoryOrderDatabase, clock: ManualClock
) -> None:
    ended: list[tuple[UUID, OrderStatus]] = []
    service = OrderService(
        db.unit_of_work, clock, on_settled=lambda order: ended.append((order.id, order.status))
    )
    confirmed, timed_out = await place(service), await place(service)
    await deliver(service, clock, reserved(confirmed))
    assert ended == []
    paid = await deliver(service, clock, succeeded(confirmed))
    await service.handle(paid)  # a duplicate changes nothing and reports nothing
    await deliver(service, clock, failed(confirmed))  # absorbed by the terminal state
    clock.advance(timedelta(seconds=30))
    await service.sweep_deadlines()
    assert ended == [(confirmed, OrderStatus.CONFIRMED), (timed_out, OrderStatus.CANCELLED)]


async def test_a_sweep_whose_later_batch_fails_returns_what_it_committed(
    service: OrderService,
    db: MemoryOrderDatabase,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It raised: the job dropped its trace as an outage's, and the cancellations the
    earlier batches committed named a span never exported. The failure comes again next."""
    placed = [await place(service) for _ in range(15)]
    clock.advance(timedelta(minutes=1))
    sweep = service.sweep_deadlines
    calls = 0

    async def second_fails(limit: int = 100) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise InfrastructureError("the database went away")
        return await sweep(limit)

    monkeypatch.setattr(service, "sweep_deadlines", second_fails)
    with caplog.at_level(logging.WARNING, logger="core_saga.handlers.order"):
        assert await service.sweep_overdue(limit=10) == 10
    assert "stopped after cancelling 10 order(s)" in caplog.text
    statuses = [(await stored(db, order_id)).status for order_id in placed]
    assert statuses.count(OrderStatus.CANCELLED) == 10
    calls = 1  # the next tick: its first batch fails, and that is raised
    with pytest.raises(InfrastructureError):
        await service.sweep_overdue(limit=10)

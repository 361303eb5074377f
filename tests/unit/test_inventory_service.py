"""The inventory service: reserve all or none, release once with a tombstone, sell on confirm."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest
from core_saga.handlers.exactly_once import new_envelope
from core_saga.handlers.inventory import InventoryService
from core_saga.inventory import SEED_PRODUCTS, Reservation, ReservationStatus
from core_saga.memory import ManualClock, MemoryInventoryDatabase
from core_saga.messages import (
    Envelope,
    Event,
    LineItem,
    OrderConfirmed,
    OrderCreated,
    StockRejected,
    StockReleaseRequested,
    StockReserved,
    decode,
)

pytestmark = pytest.mark.unit

MOUSE, KEYBOARD, HUB, MONITOR, STAND = (product.id for product in SEED_PRODUCTS)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db(clock: ManualClock) -> MemoryInventoryDatabase:
    return MemoryInventoryDatabase(clock)


@pytest.fixture
def service(db: MemoryInventoryDatabase, clock: ManualClock) -> InventoryService:
    return InventoryService(db.unit_of_work, clock)


def items(**quantities: int) -> tuple[LineItem, ...]:
    ids = {"mouse": MOUSE, "keyboard": KEYBOARD, "monitor": MONITOR, "stand": STAND}
    return tuple(
        LineItem(product_id=ids[name], quantity=quantity, unit_price=Decimal("2.50"))
        for name, quantity in quantities.items()
    )


def created(order_id: UUID, lines: tuple[LineItem, ...]) -> OrderCreated:
    total = sum((line.unit_price * line.quantity for line in lines), Decimal(0))
    return OrderCreated(
        order_id=order_id, customer_id=uuid4(), items=lines, total_amount=total, currency="EUR"
    )


async def deliver(service: InventoryService, clock: ManualClock, event: Event) -> Envelope:
    envelope = new_envelope(event, clock.now(), None)
    await service.handle(envelope)
    return envelope


def sent(db: MemoryInventoryDatabase) -> list[Event]:
    return [decode(row.message.value).payload for row in db.outbox.rows]


def counts(db: MemoryInventoryDatabase, product_id: UUID) -> tuple[int, int, int]:
    product = db.products.rows[product_id]
    return product.stock, product.reserved, product.sold


def reservation(db: MemoryInventoryDatabase, order_id: UUID) -> Reservation | None:
    return db.reservations.rows.get(order_id)


async def test_order_created_reserves_every_line(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    order_id = uuid4()
    lines = items(mouse=2, monitor=30, stand=1)
    await deliver(service, clock, created(order_id, lines))
    assert counts(db, MOUSE) == (98, 2, 0)
    assert counts(db, MONITOR) == (0, 30, 0)
    held = reservation(db, order_id)
    assert held is not None
    assert held.status is ReservationStatus.RESERVED
    assert held.lines == {MOUSE: 2, MONITOR: 30, STAND: 1}
    [event] = sent(db)
    assert event == StockReserved(
        order_id=order_id, items=lines, total_amount=Decimal("82.50"), currency="EUR"
    )


async def test_short_stock_rejects_the_whole_order(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    order_id = uuid4()
    await deliver(service, clock, created(order_id, items(mouse=2, monitor=31)))
    assert counts(db, MOUSE) == (100, 0, 0)
    assert reservation(db, order_id) is None
    assert sent(db) == [
        StockRejected(order_id=order_id, reason='Insufficient stock for product: 27" Monitor')
    ]


async def test_an_unknown_product_is_rejected(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    order_id, unknown = uuid4(), uuid4()
    line = LineItem(product_id=unknown, quantity=1, unit_price=Decimal(1))
    await deliver(service, clock, created(order_id, (line,)))
    assert sent(db) == [StockRejected(order_id=order_id, reason=f"Unknown product: {unknown}")]


async def test_release_gives_back_what_the_order_holds_once(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    order_id = uuid4()
    lines = items(keyboard=4)
    await deliver(service, clock, created(order_id, lines))
    await deliver(service, clock, StockReleaseRequested(order_id=order_id, items=lines))
    await deliver(service, clock, StockReleaseRequested(order_id=order_id, items=lines))
    assert counts(db, KEYBOARD) == (50, 0, 0)
    held = reservation(db, order_id)
    assert held is not None
    assert held.status is ReservationStatus.RELEASED
    assert [type(event).__name__ for event in sent(db)] == [
        "StockReserved",
        "StockReleased",
        "StockReleased",
    ]


async def test_a_redelivered_release_request_is_applied_once(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    order_id = uuid4()
    lines = items(keyboard=4)
    await deliver(service, clock, created(order_id, lines))
    release = await deliver(service, clock, StockReleaseRequested(order_id=order_id, items=lines))
    await service.handle(release)
    assert [type(event).__name__ for event in sent(db)] == ["StockReserved", "StockReleased"]


async def test_release_before_reserve_leaves_a_tombstone_and_blocks_the_reservation(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    order_id = uuid4()
    lines = items(mouse=3)
    await deliver(service, clock, StockReleaseRequested(order_id=order_id, items=lines))
    assert reservation(db, order_id) == Reservation(order_id, {}, ReservationStatus.RELEASED)
    await deliver(service, clock, created(order_id, lines))
    assert counts(db, MOUSE) == (100, 0, 0)
    released, rejected = sent(db)
    assert type(released).__name__ == "StockReleased"
    assert isinstance(rejected, StockRejected)


async def test_confirm_turns_the_reservation_into_sold_stock(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    order_id = uuid4()
    lines = items(stand=5)
    await deliver(service, clock, created(order_id, lines))
    await deliver(service, clock, OrderConfirmed(order_id=order_id))
    assert counts(db, STAND) == (195, 0, 5)
    held = reservation(db, order_id)
    assert held is not None
    assert held.status is ReservationStatus.SOLD
    await deliver(service, clock, StockReleaseRequested(order_id=order_id, items=lines))
    assert counts(db, STAND) == (195, 0, 5)
    assert [type(event).__name__ for event in sent(db)] == ["StockReserved"]


async def test_confirm_without_a_held_reservation_changes_nothing(
    service: InventoryService, db: MemoryInventoryDatabase, clock: ManualClock
) -> None:
    await deliver(service, clock, OrderConfirmed(order_id=uuid4()))
    assert all(counts(db, product.id)[1:] == (0, 0) for product in SEED_PRODUCTS)
    assert db.reservations.rows == {}

"""Reservation rules: all lines or none, release and sell move counts, lock order."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from uuid import UUID

import pytest
from core_saga.inventory import (
    SEED_PRODUCTS,
    Product,
    Reservation,
    ReservationRejected,
    ReservationStatus,
    release,
    requested_quantities,
    reserve,
    sell,
)
from core_saga.messages import LineItem

pytestmark = pytest.mark.unit

MOUSE, KEYBOARD, HUB, MONITOR, STAND = (product.id for product in SEED_PRODUCTS)


def stock() -> dict[UUID, Product]:
    return {product.id: replace(product) for product in SEED_PRODUCTS}


def line(product_id: UUID, quantity: int) -> LineItem:
    return LineItem(product_id=product_id, quantity=quantity, unit_price=Decimal("1"))


def test_requested_quantities_merge_lines_in_ascending_id_order() -> None:
    wanted = requested_quantities((line(STAND, 1), line(MOUSE, 2), line(STAND, 3)))
    assert list(wanted.items()) == [(MOUSE, 2), (STAND, 4)]


def test_reserve_takes_every_line_from_stock() -> None:
    products = stock()
    reserve(products, {MOUSE: 2, MONITOR: 30})
    assert (products[MOUSE].stock, products[MOUSE].reserved) == (98, 2)
    assert (products[MONITOR].stock, products[MONITOR].reserved) == (0, 30)


def test_reserve_is_all_or_nothing() -> None:
    products = stock()
    with pytest.raises(ReservationRejected, match='Insufficient stock for product: 27" Monitor'):
        reserve(products, {MOUSE: 2, MONITOR: 31})
    assert products == stock()


def test_reserve_rejects_an_unknown_product() -> None:
    unknown = UUID("99999999-9999-9999-9999-999999999999")
    with pytest.raises(ReservationRejected, match=f"Unknown product: {unknown}"):
        reserve(stock(), {unknown: 1})


def test_release_and_sell_move_reserved_stock() -> None:
    products = stock()
    reserve(products, {MOUSE: 5, HUB: 1})
    held = Reservation(UUID(int=1), {MOUSE: 5, HUB: 1}, ReservationStatus.RESERVED)
    release(products, held)
    assert held.status is ReservationStatus.RELEASED
    assert products == stock()
    reserve(products, {KEYBOARD: 4})
    held = Reservation(UUID(int=2), {KEYBOARD: 4}, ReservationStatus.RESERVED)
    sell(products, held)
    assert held.status is ReservationStatus.SOLD
    assert (products[KEYBOARD].stock, products[KEYBOARD].reserved, products[KEYBOARD].sold) == (
        46,
        0,
        4,
    )

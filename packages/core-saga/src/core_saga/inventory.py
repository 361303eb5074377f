"""Products and reservations: reserve all lines or none, release once, commit to sold."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final
from uuid import UUID

from core_saga.messages import LineItem


@dataclass
class Product:
    """Stock is what is still available to reserve; reserved and sold are held apart."""

    id: UUID
    name: str
    stock: int
    reserved: int = 0
    sold: int = 0


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    RELEASED = "RELEASED"
    SOLD = "SOLD"


@dataclass
class Reservation:
    """What one order holds. A RELEASED reservation is a tombstone: never reserved again."""

    order_id: UUID
    lines: dict[UUID, int]  # product id → quantity
    status: ReservationStatus


class ReservationRejected(Exception):
    """Stock cannot be reserved: unknown product, short stock, or the order was released."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


SEED_PRODUCTS: Final[tuple[Product, ...]] = (
    Product(UUID("11111111-1111-1111-1111-111111111111"), "Wireless Mouse", 100),
    Product(UUID("22222222-2222-2222-2222-222222222222"), "Mechanical Keyboard", 50),
    Product(UUID("33333333-3333-3333-3333-333333333333"), "USB-C Hub", 75),
    Product(UUID("44444444-4444-4444-4444-444444444444"), '27" Monitor', 30),
    Product(UUID("55555555-5555-5555-5555-555555555555"), "Laptop Stand", 200),
)


def requested_quantities(items: tuple[LineItem, ...]) -> dict[UUID, int]:
    """Quantities per product in ascending product-id order (the lock order)."""
    totals: dict[UUID, int] = {}
    for item in items:
        totals[item.product_id] = totals.get(item.product_id, 0) + item.quantity
    return dict(sorted(totals.items(), key=lambda pair: str(pair[0])))


def reserve(products: Mapping[UUID, Product], wanted: Mapping[UUID, int]) -> None:
    """Take ``wanted`` out of stock, all lines or none; raise ``ReservationRejected``."""
    for product_id, quantity in wanted.items():
        product = products.get(product_id)
        if product is None:
            raise ReservationRejected(f"Unknown product: {product_id}")
        if product.stock < quantity:
            raise ReservationRejected(f"Insufficient stock for product: {product.name}")
    for product_id, quantity in wanted.items():
        products[product_id].stock -= quantity
        products[product_id].reserved += quantity


def release(products: Mapping[UUID, Product], reservation: Reservation) -> None:
    """Give a held reservation back to stock (callers check it is RESERVED)."""
    for product_id, quantity in reservation.lines.items():
        products[product_id].reserved -= quantity
        products[product_id].stock += quantity
    reservation.status = ReservationStatus.RELEASED


def sell(products: Mapping[UUID, Product], reservation: Reservation) -> None:
    """Turn a held reservation into sold stock (callers check it is RESERVED)."""
    for product_id, quantity in reservation.lines.items():
        products[product_id].reserved -= quantity
        products[product_id].sold += quantity
    reservation.status = ReservationStatus.SOLD

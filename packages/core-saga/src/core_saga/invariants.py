"""The saga's invariants (README: saga rules), checked on a snapshot read through the ports.

Usable on any backend: ``snapshot = await read_snapshot(order_ids, ...)`` with the four
services' unit-of-work factories, then ``invariant_violations(snapshot, initial_stock)``
once every message is delivered (``conservation_violations`` holds at every moment).
``order_ids`` must name every order placed since ``initial_stock`` was taken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from core_saga.inventory import Product, Reservation, ReservationStatus, requested_quantities
from core_saga.notifications import Notification, NotificationType
from core_saga.orders import Order, OrderStatus
from core_saga.payments import Payment, PaymentStatus
from core_saga.ports import (
    InventoryUnitOfWork,
    NotificationUnitOfWork,
    OrderUnitOfWork,
    PaymentUnitOfWork,
)

_END_OF_TIME = datetime.max.replace(tzinfo=UTC)
_EVERY = 1_000_000

EXPECTED_NOTIFICATION = {
    OrderStatus.CONFIRMED: NotificationType.ORDER_CONFIRMED,
    OrderStatus.CANCELLED: NotificationType.ORDER_CANCELLED,
}


@dataclass(frozen=True)
class SagaSnapshot:
    """The four services' state for a set of orders, as their repositories report it."""

    orders: Mapping[UUID, Order | None]
    products: Mapping[UUID, Product]
    reservations: Mapping[UUID, Reservation | None]
    payments: Mapping[UUID, Sequence[Payment]]
    notifications: Mapping[UUID, Sequence[Notification]]
    unsent: AbstractSet[UUID] = frozenset()
    """The orders whose notification is stored but not yet sent."""


async def read_snapshot(
    order_ids: Iterable[UUID],
    *,
    order: Callable[[], OrderUnitOfWork],
    inventory: Callable[[], InventoryUnitOfWork],
    payment: Callable[[], PaymentUnitOfWork],
    notification: Callable[[], NotificationUnitOfWork],
) -> SagaSnapshot:
    """Read every service's view of ``order_ids`` (read-only transactions, rolled back)."""
    ids = list(order_ids)
    async with order() as uow:
        orders = {order_id: await uow.orders.get(order_id) for order_id in ids}
    async with inventory() as stock:
        products = {product.id: product for product in await stock.products.list()}
        reservations = {order_id: await stock.reservations.get(order_id) for order_id in ids}
    async with payment() as pay:
        payments = {order_id: list(await pay.payments.list(order_id)) for order_id in ids}
    async with notification() as notes:
        notifications = {
            order_id: list(await notes.notifications.list(order_id)) for order_id in ids
        }
        unsent = {
            n.order_id
            for n in await notes.notifications.unsent(_END_OF_TIME, _EVERY)
            if n.order_id in notifications
        }
    return SagaSnapshot(orders, products, reservations, payments, notifications, unsent)


def conservation_violations(snapshot: SagaSnapshot, initial_stock: Mapping[UUID, int]) -> list[str]:
    """What must hold after every transaction: stock is conserved, each order charged once."""
    problems: list[str] = []
    for product_id, initial in initial_stock.items():
        product = snapshot.products.get(product_id)
        if product is None:
            problems.append(f"product {product_id} is missing")
            continue
        total = product.stock + product.reserved + product.sold
        if total != initial:
            problems.append(f"product {product.name}: stock+reserved+sold={total}, not {initial}")
        if min(product.stock, product.reserved, product.sold) < 0:
            problems.append(f"product {product.name} has a negative count: {product}")
    for order_id, payments in snapshot.payments.items():
        if len(payments) > 1:
            problems.append(f"order {order_id} was charged {len(payments)} times")
    return problems


def invariant_violations(snapshot: SagaSnapshot, initial_stock: Mapping[UUID, int]) -> list[str]:
    """Every invariant (README: saga rules) that must hold once every message is delivered."""
    problems = conservation_violations(snapshot, initial_stock)
    sold: dict[UUID, int] = {}
    for order_id, order in snapshot.orders.items():
        if order is None:
            problems.append(f"order {order_id} is missing")
            continue
        problems.extend(_order_violations(snapshot, order))
        if order.status is OrderStatus.CONFIRMED:
            for product_id, quantity in requested_quantities(order.items).items():
                sold[product_id] = sold.get(product_id, 0) + quantity
    for product_id, product in snapshot.products.items():
        if product.id in initial_stock and product.sold != sold.get(product_id, 0):
            problems.append(
                f"product {product.name}: sold={product.sold} but confirmed orders "
                f"bought {sold.get(product_id, 0)}"
            )
        if product.id in initial_stock and product.reserved != 0:
            problems.append(f"product {product.name} still has {product.reserved} reserved")
    return problems


def _order_violations(snapshot: SagaSnapshot, order: Order) -> list[str]:
    problems: list[str] = []
    name = f"order {order.id} ({order.status})"
    reservation = snapshot.reservations.get(order.id)
    succeeded = [
        p for p in snapshot.payments.get(order.id, ()) if p.status is PaymentStatus.SUCCEEDED
    ]
    problems += [
        f"{name} has payment {p.id} still {p.status}"
        for p in snapshot.payments.get(order.id, ())
        if p.status.due
    ]
    if not order.status.terminal:
        problems.append(f"{name} is not terminal")
    elif order.status is OrderStatus.CONFIRMED:
        if len(succeeded) != 1:
            problems.append(f"{name} has {len(succeeded)} succeeded payments, not 1")
        wanted = requested_quantities(order.items)
        if reservation is None or reservation.status is not ReservationStatus.SOLD:
            problems.append(f"{name} is not sold: reservation {reservation}")
        elif reservation.lines != wanted:
            problems.append(f"{name} sold {reservation.lines}, not {wanted}")
    else:
        if reservation is not None and reservation.status is not ReservationStatus.RELEASED:
            problems.append(f"{name} still holds reservation {reservation}")
        if succeeded:
            problems.append(f"{name} has a succeeded payment {succeeded[0].id}")
    notifications = snapshot.notifications.get(order.id, ())
    if order.status.terminal:
        kinds = [n.type for n in notifications]
        if kinds != [EXPECTED_NOTIFICATION[order.status]]:
            problems.append(f"{name} has notifications {kinds}, not exactly one of its outcome")
        elif order.id in snapshot.unsent:
            problems.append(f"{name} has a notification never sent")
    return problems

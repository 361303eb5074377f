"""The inventory service: reserve an order's stock, release it on request, sell it on confirm."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from core_saga.handlers.exactly_once import apply_batch, apply_once
from core_saga.inventory import (
    Reservation,
    ReservationRejected,
    ReservationStatus,
    release,
    requested_quantities,
    reserve,
    sell,
)
from core_saga.messages import (
    Envelope,
    Event,
    OrderConfirmed,
    OrderCreated,
    StockRejected,
    StockReleased,
    StockReleaseRequested,
    StockReserved,
)
from core_saga.ports import Around, Clock, DomainError, InventoryUnitOfWork

RELEASED_BEFORE_RESERVED = "Order was cancelled before its stock was reserved"


@dataclass
class InventoryService:
    """Applies OrderCreated, StockReleaseRequested and OrderConfirmed to stock (README: rules)."""

    uow: Callable[[], InventoryUnitOfWork]
    clock: Clock
    subscriptions: frozenset[str] = field(
        default=frozenset({"OrderCreated", "StockReleaseRequested", "OrderConfirmed"}),
        init=False,
    )

    async def handle(self, envelope: Envelope) -> None:
        if envelope.event_type in self.subscriptions:
            await apply_once(self.uow, self.clock, envelope, self._apply)

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        await apply_batch(
            self.uow, self.clock, envelopes, self._apply, around=around, prepare=self._lock_stock
        )

    async def _lock_stock(self, uow: InventoryUnitOfWork, envelopes: Sequence[Envelope]) -> None:
        """Lock every product the batch may touch, in ascending id order, before any change.

        Locking per order would take a batch's products out of order across its orders,
        and two batches could then deadlock on them.
        """
        product_ids: set[UUID] = set()
        for envelope in envelopes:
            event = envelope.payload
            if isinstance(event, OrderCreated | StockReleaseRequested):
                product_ids.update(item.product_id for item in event.items)
            elif (held := await uow.reservations.get(event.order_id)) is not None:
                product_ids.update(held.lines)
        await uow.products.lock(list(product_ids))  # the port locks in ascending id order

    async def _apply(self, uow: InventoryUnitOfWork, envelope: Envelope) -> list[Event]:
        event = envelope.payload
        if isinstance(event, OrderCreated):
            return await self._reserve(uow, event)
        if isinstance(event, StockReleaseRequested):
            return await self._release(uow, event)
        if isinstance(event, OrderConfirmed):
            await self._sell(uow, event)
            return []
        raise DomainError(f"the inventory service does not apply {envelope.event_type}")

    async def _reserve(self, uow: InventoryUnitOfWork, event: OrderCreated) -> list[Event]:
        """All lines or none, products locked in ascending id order."""
        held = await uow.reservations.get(event.order_id, for_update=True)
        if held is not None:
            if held.status is ReservationStatus.RELEASED:  # the tombstone: never reserve again
                return [StockRejected(order_id=event.order_id, reason=RELEASED_BEFORE_RESERVED)]
            return []
        wanted = requested_quantities(event.items)
        products = await uow.products.lock(list(wanted))
        try:
            reserve(products, wanted)
        except ReservationRejected as rejected:
            return [StockRejected(order_id=event.order_id, reason=rejected.reason)]
        await uow.products.save(list(products.values()))
        await uow.reservations.add(
            Reservation(event.order_id, dict(wanted), ReservationStatus.RESERVED)
        )
        return [
            StockReserved(
                order_id=event.order_id,
                items=event.items,
                total_amount=event.total_amount,
                currency=event.currency,
            )
        ]

    async def _release(self, uow: InventoryUnitOfWork, event: StockReleaseRequested) -> list[Event]:
        """Give back what the order holds; leave a RELEASED tombstone even if it held nothing.

        The request may overtake the reservation (or the reservation may never come); the
        tombstone makes a late OrderCreated a rejection instead of a leaked reservation.
        """
        held = await uow.reservations.get(event.order_id, for_update=True)
        if held is None:
            await uow.reservations.add(Reservation(event.order_id, {}, ReservationStatus.RELEASED))
        elif held.status is ReservationStatus.RESERVED:
            products = await uow.products.lock(list(held.lines))
            release(products, held)
            await uow.products.save(list(products.values()))
            await uow.reservations.save(held)
        elif held.status is ReservationStatus.SOLD:
            return []  # a confirmed order's stock is sold; there is nothing to release
        return [StockReleased(order_id=event.order_id)]

    async def _sell(self, uow: InventoryUnitOfWork, event: OrderConfirmed) -> None:
        held = await uow.reservations.get(event.order_id, for_update=True)
        if held is None or held.status is not ReservationStatus.RESERVED:
            return
        products = await uow.products.lock(list(held.lines))
        sell(products, held)
        await uow.products.save(list(products.values()))
        await uow.reservations.save(held)

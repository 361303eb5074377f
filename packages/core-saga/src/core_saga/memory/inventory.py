"""The inventory service's in-memory database: products and reservations."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from uuid import UUID

from core_saga.inventory import SEED_PRODUCTS, Product, Reservation
from core_saga.memory.tables import LockScope, Staged, Table
from core_saga.memory.unit_of_work import MemoryDatabase, MemoryUnitOfWork
from core_saga.ports import Clock, ProductRepository, ReservationRepository


def copy_reservation(reservation: Reservation) -> Reservation:
    return replace(reservation, lines=dict(reservation.lines))


class MemoryProducts:
    def __init__(self, rows: Staged[UUID, Product], locks: LockScope) -> None:
        self._rows, self._locks = rows, locks

    async def list(self) -> Sequence[Product]:
        return sorted(self._rows.select(), key=lambda product: str(product.id))

    async def get(self, product_id: UUID) -> Product | None:
        return self._rows.get(product_id)

    async def lock(self, product_ids: Sequence[UUID]) -> dict[UUID, Product]:
        locked: dict[UUID, Product] = {}
        for product_id in sorted(set(product_ids), key=str):
            await self._locks.lock(product_id)
            product = self._rows.get(product_id)
            if product is not None:
                locked[product_id] = product
        return locked

    async def save(self, products: Sequence[Product]) -> None:
        for product in products:
            self._rows.put(product.id, product)


class MemoryReservations:
    def __init__(self, rows: Staged[UUID, Reservation], locks: LockScope) -> None:
        self._rows, self._locks = rows, locks

    async def get(self, order_id: UUID, *, for_update: bool = False) -> Reservation | None:
        if for_update:
            await self._locks.lock(order_id)
        return self._rows.get(order_id)

    async def add(self, reservation: Reservation) -> None:
        if self._rows.get(reservation.order_id) is not None:
            raise ValueError(f"order {reservation.order_id} already has a reservation")
        self._rows.put(reservation.order_id, reservation)

    async def save(self, reservation: Reservation) -> None:
        self._rows.put(reservation.order_id, reservation)


class MemoryInventoryDatabase(MemoryDatabase):
    def __init__(self, clock: Clock, products: Iterable[Product] = SEED_PRODUCTS) -> None:
        super().__init__(clock)
        self.products: Table[UUID, Product] = Table(replace)
        self.products.rows = {product.id: replace(product) for product in products}
        self.reservations: Table[UUID, Reservation] = Table(copy_reservation)

    def unit_of_work(self) -> MemoryInventoryUnitOfWork:
        return MemoryInventoryUnitOfWork(self)


class MemoryInventoryUnitOfWork(MemoryUnitOfWork):
    def __init__(self, db: MemoryInventoryDatabase) -> None:
        super().__init__(db)
        self.products: ProductRepository = MemoryProducts(
            self.stage(db.products), self.lock_scope("products")
        )
        self.reservations: ReservationRepository = MemoryReservations(
            self.stage(db.reservations), self.lock_scope("reservations")
        )

"""ProductRepository and ReservationRepository: the seeded catalogue, counts, reservations."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from uuid import UUID, uuid4

from core_saga.inventory import SEED_PRODUCTS, Reservation, ReservationStatus
from core_saga.ports import InventoryUnitOfWork

from tests.contract.builders import HUB, KEYBOARD, MOUSE, assert_waiting, new_reservation
from tests.contract.conftest import Database


async def test_the_five_seeded_products_are_listed_and_found(
    inventory: Database[InventoryUnitOfWork],
) -> None:
    async with inventory.unit_of_work() as uow:
        listed = await uow.products.list()
        found = [await uow.products.get(product.id) for product in SEED_PRODUCTS]
        assert await uow.products.get(uuid4()) is None
    assert listed == sorted(SEED_PRODUCTS, key=lambda product: product.id)
    assert found == list(SEED_PRODUCTS)


async def test_lock_returns_only_the_known_products(
    inventory: Database[InventoryUnitOfWork],
) -> None:
    unknown = uuid4()
    async with inventory.unit_of_work() as uow:
        locked = await uow.products.lock([KEYBOARD, unknown, MOUSE, KEYBOARD])
        assert await uow.products.lock([]) == {}
    assert locked == {MOUSE: SEED_PRODUCTS[0], KEYBOARD: SEED_PRODUCTS[1]}


async def test_save_persists_the_counts(inventory: Database[InventoryUnitOfWork]) -> None:
    async with inventory.unit_of_work() as uow:
        locked = await uow.products.lock([MOUSE, HUB])
        mouse = replace(locked[MOUSE], stock=90, reserved=6, sold=4)
        hub = replace(locked[HUB], stock=0, reserved=75)
        await uow.products.save([mouse, hub])
        await uow.commit()

    async with inventory.unit_of_work() as uow:
        assert await uow.products.get(MOUSE) == mouse
        assert await uow.products.get(HUB) == hub
        assert await uow.products.get(KEYBOARD) == SEED_PRODUCTS[1]


async def test_a_reservation_round_trips_and_save_persists_its_status(
    inventory: Database[InventoryUnitOfWork],
) -> None:
    reservation = new_reservation()
    async with inventory.unit_of_work() as uow:
        assert await uow.reservations.get(reservation.order_id) is None
        await uow.reservations.add(reservation)
        await uow.commit()

    async with inventory.unit_of_work() as uow:
        found = await uow.reservations.get(reservation.order_id, for_update=True)
        assert found == reservation
        assert found is not None
        found.status = ReservationStatus.RELEASED
        await uow.reservations.save(found)
        await uow.commit()

    async with inventory.unit_of_work() as uow:
        released = await uow.reservations.get(reservation.order_id)
        assert await uow.reservations.get(uuid4()) is None
    assert released == replace(reservation, status=ReservationStatus.RELEASED)
    assert released is not None
    assert released.lines == {MOUSE: 2, HUB: 1}


async def test_locked_products_wait_for_the_holder(
    inventory: Database[InventoryUnitOfWork],
) -> None:
    async def lock(*product_ids: UUID) -> None:
        async with inventory.unit_of_work() as uow:
            await uow.products.lock(list(product_ids))

    async with inventory.unit_of_work() as first:
        await first.products.lock([MOUSE, HUB])
        await asyncio.wait_for(lock(KEYBOARD), 10)  # another product is not held up
        second = asyncio.create_task(lock(KEYBOARD, HUB))
        await assert_waiting(second)
        await first.commit()
    await asyncio.wait_for(second, 10)


async def test_reading_a_reservation_for_update_holds_the_order_even_before_it_exists(
    inventory: Database[InventoryUnitOfWork],
) -> None:
    reservation = new_reservation()

    async def read_for_update() -> Reservation | None:
        async with inventory.unit_of_work() as uow:
            return await uow.reservations.get(reservation.order_id, for_update=True)

    async with inventory.unit_of_work() as first:
        assert await first.reservations.get(reservation.order_id, for_update=True) is None
        second = asyncio.create_task(read_for_update())
        await assert_waiting(second)
        await first.reservations.add(reservation)
        await first.commit()
    assert await asyncio.wait_for(second, 10) == reservation

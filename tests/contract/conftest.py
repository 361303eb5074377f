"""Each service's database on both adapters: ``backend`` is ``memory`` or ``postgres``.

A test asks for ``orders``, ``inventory``, ``payments`` or ``notifications`` (or
``database``, which also runs over all four services) and gets a fresh, empty ``Database``:
the unit-of-work factory the use cases take, and the outbox store the relay takes. The
memory variant is marked ``unit``, the Postgres one ``integration``; only the latter starts
a server (one migrated database per service for the session, emptied before each test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import pytest
from adapters_postgres.engine import create_engine
from adapters_postgres.outbox import PostgresOutboxStore
from adapters_postgres.tables import METADATA, products
from adapters_postgres.uow import (
    inventory_uow_factory,
    notification_uow_factory,
    order_uow_factory,
    payment_uow_factory,
)
from core_saga.inventory import SEED_PRODUCTS
from core_saga.memory import (
    ManualClock,
    MemoryInventoryDatabase,
    MemoryNotificationDatabase,
    MemoryOrderDatabase,
    MemoryPaymentDatabase,
)
from core_saga.ports import (
    InventoryUnitOfWork,
    NotificationUnitOfWork,
    OrderUnitOfWork,
    OutboxStore,
    PaymentUnitOfWork,
    UnitOfWork,
)
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fixtures.postgres import DatabaseFactory

U = TypeVar("U", bound=UnitOfWork)

SERVICES = ("order", "inventory", "payment", "notification")

MEMORY_DATABASES: dict[str, Callable[[ManualClock], Any]] = {
    "order": MemoryOrderDatabase,
    "inventory": MemoryInventoryDatabase,  # seeded with SEED_PRODUCTS, as migration 0002 does
    "payment": MemoryPaymentDatabase,
    "notification": MemoryNotificationDatabase,
}

POSTGRES_FACTORIES: dict[str, Callable[[AsyncEngine], Callable[[], Any]]] = {
    "order": order_uow_factory,
    "inventory": inventory_uow_factory,
    "payment": payment_uow_factory,
    "notification": notification_uow_factory,
}


@dataclass(frozen=True)
class Database(Generic[U]):
    """One service database: what the use cases open transactions on, and the relay's side."""

    unit_of_work: Callable[[], U]
    outbox: OutboxStore


class Backend(Protocol):
    async def open(self, service: str, clock: ManualClock) -> Database[Any]: ...


class MemoryBackend:
    async def open(self, service: str, clock: ManualClock) -> Database[Any]:
        db = MEMORY_DATABASES[service](clock)
        return Database(db.unit_of_work, db.outbox)


class PostgresBackend:
    """One migrated database per service for the session, emptied again for every test."""

    def __init__(self, databases: DatabaseFactory) -> None:
        self._databases = databases
        self._engines: dict[str, AsyncEngine] = {}

    async def open(self, service: str, clock: ManualClock) -> Database[Any]:
        engine = self._engines.get(service)
        if engine is None:
            engine = create_engine(await self._databases.create(service))
            self._engines[service] = engine
        await _empty(engine, service)
        return Database(POSTGRES_FACTORIES[service](engine), PostgresOutboxStore(engine))

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.dispose()


async def _empty(engine: AsyncEngine, service: str) -> None:
    """Back to what the migrations leave: no rows but the seeded products."""
    names = ", ".join(table.name for table in METADATA[service].sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL lock_timeout = '5s'"))  # a leaked transaction fails
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
        if service == "inventory":
            await conn.execute(
                insert(products),
                [
                    {"id": p.id, "name": p.name, "stock": p.stock, "reserved": 0, "sold": 0}
                    for p in SEED_PRODUCTS
                ],
            )


@pytest.fixture(scope="session")
async def postgres_backend(new_database: DatabaseFactory) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(new_database)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("postgres", marks=pytest.mark.integration),
    ]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Synchronous on purpose: it may set up the Postgres fixtures, which an async one can't."""
    if request.param == "memory":
        return MemoryBackend()
    backend: PostgresBackend = request.getfixturevalue("postgres_backend")
    return backend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def database(backend: Backend, service: str, clock: ManualClock) -> Database[UnitOfWork]:
    """Any service's database: for the parts every unit of work shares (inbox, outbox)."""
    return await backend.open(service, clock)


@pytest.fixture
async def orders(backend: Backend, clock: ManualClock) -> Database[OrderUnitOfWork]:
    return await backend.open("order", clock)


@pytest.fixture
async def inventory(backend: Backend, clock: ManualClock) -> Database[InventoryUnitOfWork]:
    return await backend.open("inventory", clock)


@pytest.fixture
async def payments(backend: Backend, clock: ManualClock) -> Database[PaymentUnitOfWork]:
    return await backend.open("payment", clock)


@pytest.fixture
async def notifications(backend: Backend, clock: ManualClock) -> Database[NotificationUnitOfWork]:
    return await backend.open("notification", clock)

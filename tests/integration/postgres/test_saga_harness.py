"""The core saga property test, run on Postgres: the DESIGN §3 invariants hold for real.

``tests/property/test_saga_machine.py`` drives ``SagaHarness`` on the in-memory adapters.
Here the same rules run with a ``Backend`` built from this package's units of work and
outbox stores: only the start (fresh tables, the Postgres backend) and the event loop (one
for the whole run, because the engines' connections belong to it) differ.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

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
from core_saga.memory.harness import Backend, SagaHarness
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, run_state_machine_as_test
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.property.test_saga_machine import SagaMachine

pytestmark = pytest.mark.integration

T = TypeVar("T")
EXAMPLES = int(os.environ.get("COMMERCE_PG_SAGA_EXAMPLES", "15"))  # 200 passed locally


def backend(engines: dict[str, AsyncEngine]) -> Backend:
    return Backend(
        order=order_uow_factory(engines["order"]),
        inventory=inventory_uow_factory(engines["inventory"]),
        payment=payment_uow_factory(engines["payment"]),
        notification=notification_uow_factory(engines["notification"]),
        outboxes={name: PostgresOutboxStore(engine) for name, engine in engines.items()},
    )


async def reset(engines: dict[str, AsyncEngine]) -> None:
    """Empty every table, then seed the products again."""
    for service, engine in engines.items():
        names = ", ".join(METADATA[service].tables)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))
            if service == "inventory":
                await conn.execute(
                    insert(products),
                    [{"id": p.id, "name": p.name, "stock": p.stock} for p in SEED_PRODUCTS],
                )


class SharedLoop:
    """The run's event loop, shaped like the one ``SagaMachine`` closes after each example."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()

    def run_until_complete(self, work: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(work)

    def close(self) -> None:
        """Kept open for the next example; ``runner.close()`` ends it."""


def on_postgres(loop: SharedLoop, engines: dict[str, AsyncEngine]) -> type[RuleBasedStateMachine]:
    class SagaOnPostgres(SagaMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop.close()
            self.loop = loop  # type: ignore[assignment]

        @initialize(rate=st.sampled_from([0.0, 0.5, 0.8, 1.0]), partitions=st.integers(1, 3))
        def start(self, rate: float, partitions: int) -> None:
            SagaMachine.start(self, rate, partitions)
            knobs = self.harness
            self.run(reset(engines))
            self.harness = SagaHarness(
                backend(engines),
                partitions=knobs.broker.partitions,
                gateway=knobs.gateway,
                new_order_id=knobs.orders.new_order_id,
            )

    return SagaOnPostgres


def test_saga_invariants_hold_on_postgres(service_databases: dict[str, str]) -> None:
    loop = SharedLoop()
    engines = {
        service: create_engine(url, pool_size=2, max_overflow=2)
        for service, url in service_databases.items()
    }
    try:
        run_state_machine_as_test(
            on_postgres(loop, engines),
            settings=settings(
                SagaMachine.TestCase.settings,
                max_examples=EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        for engine in engines.values():
            loop.run_until_complete(engine.dispose())
        loop.runner.close()

"""In-memory adapters for every port, and the harness that runs the saga on them."""

from core_saga.memory.broker import MemoryBroker, MemoryPublisher
from core_saga.memory.clock import ManualClock
from core_saga.memory.gateway import ScriptedGateway
from core_saga.memory.harness import (
    Backend,
    Cursor,
    DeadLetter,
    SagaHarness,
    SimulatedCrash,
    memory_backend,
    order_request,
)
from core_saga.memory.inventory import MemoryInventoryDatabase, MemoryInventoryUnitOfWork
from core_saga.memory.notification import (
    MemoryNotificationDatabase,
    MemoryNotificationUnitOfWork,
    MemoryNotifier,
)
from core_saga.memory.order import MemoryOrderDatabase, MemoryOrderUnitOfWork
from core_saga.memory.outbox import MemoryInbox, MemoryOutbox, MemoryOutboxStore
from core_saga.memory.payment import MemoryPaymentDatabase, MemoryPaymentUnitOfWork
from core_saga.memory.unit_of_work import MemoryDatabase, MemoryUnitOfWork

__all__ = [
    "Backend",
    "Cursor",
    "DeadLetter",
    "ManualClock",
    "MemoryBroker",
    "MemoryDatabase",
    "MemoryInbox",
    "MemoryInventoryDatabase",
    "MemoryInventoryUnitOfWork",
    "MemoryNotificationDatabase",
    "MemoryNotificationUnitOfWork",
    "MemoryNotifier",
    "MemoryOrderDatabase",
    "MemoryOrderUnitOfWork",
    "MemoryOutbox",
    "MemoryOutboxStore",
    "MemoryPaymentDatabase",
    "MemoryPaymentUnitOfWork",
    "MemoryPublisher",
    "MemoryUnitOfWork",
    "SagaHarness",
    "ScriptedGateway",
    "SimulatedCrash",
    "memory_backend",
    "order_request",
]

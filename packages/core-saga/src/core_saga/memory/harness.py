"""A controllable run of the whole four-service saga over in-memory partitioned topics.

The four services' handlers consume from a ``MemoryBroker`` with their own offsets per
(service, topic, partition); nothing moves unless the test says so::

    harness = SagaHarness()                      # memory backend, ManualClock, 3 partitions
    await harness.place_order(order_request({MOUSE: 2}))
    order_id = harness.order_ids[-1]             # the order just placed
    harness.gateway.decide(order_id, succeeded=False)   # or ScriptedGateway(success_rate=…)
    await harness.relay()                        # every service's outbox → its topic
    cursor = harness.pending()[0]                # any (service, topic, partition) with mail
    await harness.deliver(cursor)                # its next message, acknowledged
    await harness.deliver(cursor, crash_before_commit=True)  # rolled back, not acknowledged
    harness.duplicate(topic, partition, offset)  # that message again, at the log's end
    await harness.restart_broker()               # everything lost; outboxes send again
    harness.clock.advance(timedelta(seconds=31)); await harness.sweep()
    harness.gateway.down = True                  # charges and refunds fail: payments wait
    await harness.settle_payments()              # the payment service's sweep
    harness.notifier.down = True                 # sends fail: notifications stay unsent
    await harness.send_notifications()           # the notification service's sweep
    await harness.run_until_quiet()              # relay, deliver, settle until nothing moves
    assert await harness.violations() == []      # the invariants, dead letters

Another backend (e.g. Postgres): pass ``Backend(order=…, inventory=…, payment=…,
notification=…, outboxes={"order": …, "inventory": …, "payment": …})`` holding that
backend's unit-of-work factories and outbox stores, and ``initial_stock`` when the products
are not freshly seeded. ``new_order_id`` makes order ids (so partitions and simulated
payment outcomes) repeatable, as Hypothesis needs. Everything else (broker, offsets,
crashes, checks) stays the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Final, NamedTuple, TypeVar, cast
from uuid import UUID, uuid4

from core_saga.handlers.inventory import InventoryService
from core_saga.handlers.notification import NotificationService, NotifierUnavailable
from core_saga.handlers.order import OrderLine, OrderService, PlaceOrder, PlaceOrderOutcome
from core_saga.handlers.payment import GatewayUnavailable, PaymentService
from core_saga.ids import new_id
from core_saga.invariants import (
    SagaSnapshot,
    conservation_violations,
    invariant_violations,
    read_snapshot,
)
from core_saga.inventory import SEED_PRODUCTS, Product
from core_saga.memory.broker import MemoryBroker, MemoryPublisher
from core_saga.memory.clock import ManualClock
from core_saga.memory.gateway import ScriptedGateway
from core_saga.memory.inventory import MemoryInventoryDatabase
from core_saga.memory.notification import MemoryNotificationDatabase, MemoryNotifier
from core_saga.memory.order import MemoryOrderDatabase
from core_saga.memory.payment import MemoryPaymentDatabase
from core_saga.messages import TOPIC_OF, Envelope, PoisonMessage, decode
from core_saga.orders import DEFAULT_SAGA_TIMEOUT
from core_saga.ports import (
    BatchEventHandler,
    Clock,
    DomainError,
    EventHandler,
    InventoryUnitOfWork,
    NotificationUnitOfWork,
    OrderUnitOfWork,
    OutboundMessage,
    OutboxStore,
    PaymentUnitOfWork,
    UnitOfWork,
)
from core_saga.relay import relay_once

SERVICES: Final = ("order", "inventory", "payment", "notification")
U = TypeVar("U", bound=UnitOfWork)


@dataclass(frozen=True)
class Backend:
    """Where the services keep their state: unit-of-work factories and outbox stores."""

    order: Callable[[], OrderUnitOfWork]
    inventory: Callable[[], InventoryUnitOfWork]
    payment: Callable[[], PaymentUnitOfWork]
    notification: Callable[[], NotificationUnitOfWork]
    outboxes: Mapping[str, OutboxStore]  # service name → its database's outbox


def memory_backend(clock: Clock, products: Iterable[Product] = SEED_PRODUCTS) -> Backend:
    """Four fresh in-memory databases, the inventory seeded with ``products``."""
    order = MemoryOrderDatabase(clock)
    inventory = MemoryInventoryDatabase(clock, products)
    payment = MemoryPaymentDatabase(clock)
    notification = MemoryNotificationDatabase(clock)
    return Backend(
        order=order.unit_of_work,
        inventory=inventory.unit_of_work,
        payment=payment.unit_of_work,
        notification=notification.unit_of_work,
        outboxes={
            "order": order.outbox,
            "inventory": inventory.outbox,
            "payment": payment.outbox,
            "notification": notification.outbox,
        },
    )


def order_request(
    quantities: Mapping[UUID, int],
    *,
    unit_price: Decimal = Decimal("10.00"),
    customer_id: UUID | None = None,
    currency: str = "EUR",
) -> PlaceOrder:
    """A valid order for ``quantities`` (product id → quantity) at one unit price."""
    lines = tuple(
        OrderLine(product_id=product_id, quantity=quantity, unit_price=unit_price)
        for product_id, quantity in quantities.items()
    )
    return PlaceOrder(customer_id=customer_id or uuid4(), items=lines, currency=currency)


class Cursor(NamedTuple):
    """Where one service reads: a partition of a topic it subscribes to."""

    service: str
    topic: str
    partition: int


@dataclass(frozen=True)
class DeadLetter:
    cursor: Cursor
    offset: int
    reason: str


class SimulatedCrash(Exception):
    """The consumer died just before its commit: nothing applied, nothing acknowledged."""


class _CrashBeforeCommit:
    """Wraps a unit of work whose commit never happens."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _CrashBeforeCommit:
        self._inner = await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)

    async def commit(self) -> None:
        raise SimulatedCrash("the handler crashed before its commit")


class SagaHarness:
    """The four services, a broker, and the knobs a test turns (see the module docstring)."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        clock: ManualClock | None = None,
        partitions: int = 3,
        gateway: ScriptedGateway | None = None,
        saga_timeout: timedelta = DEFAULT_SAGA_TIMEOUT,
        initial_stock: Mapping[UUID, int] | None = None,
        new_order_id: Callable[[], UUID] = new_id,
    ) -> None:
        self.clock = clock or ManualClock()
        self.backend = backend or memory_backend(self.clock)
        self.broker = MemoryBroker(partitions)
        self.publisher = MemoryPublisher(self.broker)
        self.gateway = gateway or ScriptedGateway()
        self.notifier = MemoryNotifier()
        seeded = {product.id: product.stock for product in SEED_PRODUCTS}
        self.initial_stock = dict(seeded if initial_stock is None else initial_stock)
        self.order_ids: list[UUID] = []
        self.dead_letters: list[DeadLetter] = []
        self._crashing: str | None = None
        b = self.backend
        self.orders = OrderService(
            self._crashable("order", b.order), self.clock, saga_timeout, new_order_id=new_order_id
        )
        self.payments = PaymentService(
            self._crashable("payment", b.payment), self.clock, self.gateway
        )
        self.notifications = NotificationService(
            self._crashable("notification", b.notification), self.clock, self.notifier
        )
        self.handlers: dict[str, EventHandler] = {
            "order": self.orders,
            "inventory": InventoryService(self._crashable("inventory", b.inventory), self.clock),
            "payment": self.payments,
            "notification": self.notifications,
        }
        self._offsets = dict.fromkeys(self.cursors(), 0)

    def _crashable(self, service: str, factory: Callable[[], U]) -> Callable[[], U]:
        def open_unit() -> U:
            unit = factory()
            return cast(U, _CrashBeforeCommit(unit)) if self._crashing == service else unit

        return open_unit

    def cursors(self) -> list[Cursor]:
        """Every (service, topic, partition) a service consumes."""
        return [
            Cursor(service, topic, partition)
            for service in SERVICES
            for topic in sorted({TOPIC_OF[kind] for kind in self.handlers[service].subscriptions})
            for partition in range(self.broker.partitions)
        ]

    def pending(self) -> list[Cursor]:
        """The cursors with at least one undelivered message."""
        return [
            c for c, at in self._offsets.items() if at < len(self.broker.log(c.topic, c.partition))
        ]

    def records(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of every message on the broker."""
        return [
            (topic, partition, offset)
            for topic in self.broker.topics()
            for partition in range(self.broker.partitions)
            for offset in range(len(self.broker.log(topic, partition)))
        ]

    async def place_order(self, request: PlaceOrder, key: str | None = None) -> PlaceOrderOutcome:
        outcome = await self.orders.place_order(request, key or str(uuid4()))
        if outcome.kind == "created":
            self.order_ids.append(UUID(outcome.body["id"]))
        return outcome

    async def relay(self, service: str | None = None) -> int:
        """Publish every unpublished outbox row (of one service, or all); return how many."""
        relayed = 0
        for name, store in self.backend.outboxes.items():
            if service in (None, name):
                while batch := await relay_once(store, self.publisher, self.clock):
                    relayed += batch
        return relayed

    async def deliver(self, cursor: Cursor, *, crash_before_commit: bool = False) -> bool:
        """Hand the cursor's next message to its service; False when there is none.

        Acknowledged (offset advanced) unless the handler crashed before its commit; poison
        and domain errors are dead-lettered and acknowledged, as the Kafka consumer does; an
        ``InfrastructureError`` propagates and leaves the message unacknowledged.
        """
        log = self.broker.log(cursor.topic, cursor.partition)
        offset = self._offsets[cursor]
        if offset >= len(log):
            return False
        self._crashing = cursor.service if crash_before_commit else None
        try:
            await self.handlers[cursor.service].handle(decode(log[offset].value))
        except SimulatedCrash:
            return True
        except (PoisonMessage, DomainError) as error:
            self.dead_letters.append(DeadLetter(cursor, offset, str(error)))
        finally:
            self._crashing = None
        self._offsets[cursor] = offset + 1
        return True

    async def deliver_batch(
        self, cursor: Cursor, size: int, *, crash_before_commit: bool = False
    ) -> int:
        """Up to ``size`` next messages in one ``handle_batch``; return how many were taken.

        As the Kafka consumer does with records that waited: poison ends the batch (it is
        delivered alone later), types the service does not subscribe to are left out, and
        a batch the handler rejects is delivered again one message at a time.
        """
        handler = self.handlers[cursor.service]
        start = self._offsets[cursor]
        envelopes: list[Envelope] = []
        for record in self.broker.log(cursor.topic, cursor.partition)[start : start + size]:
            try:
                envelopes.append(decode(record.value))
            except PoisonMessage:
                break
        if len(envelopes) < 2 or not isinstance(handler, BatchEventHandler):
            return int(await self.deliver(cursor, crash_before_commit=crash_before_commit))
        self._crashing = cursor.service if crash_before_commit else None
        try:
            await handler.handle_batch(
                [e for e in envelopes if e.event_type in handler.subscriptions]
            )
        except SimulatedCrash:
            return 0
        except DomainError:
            for _ in envelopes:
                await self.deliver(cursor)
            return len(envelopes)
        finally:
            self._crashing = None
        self._offsets[cursor] = start + len(envelopes)
        return len(envelopes)

    def duplicate(self, topic: str, partition: int, offset: int) -> None:
        """Append that message again (a producer retry or a replayed batch)."""
        self.broker.append(self.broker.log(topic, partition)[offset])

    async def restart_broker(self, *, requeue: bool = True) -> int:
        """The broker comes back empty (every record lost, read or not), every consumer at
        offset 0; with ``requeue`` every outbox marks what it kept unpublished again, as a
        platform starting an embedded broker does. Return how many rows were requeued."""
        self.broker = MemoryBroker(self.broker.partitions)
        self.publisher.broker = self.broker
        self._offsets = dict.fromkeys(self.cursors(), 0)
        if not requeue:
            return 0
        return sum([await store.requeue_published() for store in self.backend.outboxes.values()])

    def inject(self, topic: str, key: str, value: bytes) -> None:
        """Put a raw value on a topic, e.g. poison."""
        self.broker.append(OutboundMessage(uuid4(), topic, key, "unknown", value))

    async def sweep(self, limit: int = 100) -> int:
        """Run the order service's deadline sweep at the clock's current time."""
        return await self.orders.sweep_deadlines(limit)

    async def settle_payments(self) -> int:
        """Run the payment service's sweep as if long enough had passed: every payment still
        waiting on the gateway (an outage, a crash after its commit) is settled if it can be.
        A gateway still down ends it early, as it ends the service's sweep (0 returned)."""
        try:
            return await self.payments.settle_stale(after=timedelta(0))
        except GatewayUnavailable:
            return 0

    async def send_notifications(self) -> int:
        """Run the notification service's sweep as if long enough had passed: every stored
        notification still unsent is sent if it can be (0 while the notifier is down)."""
        try:
            return await self.notifications.send_unsent(after=timedelta(0))
        except NotifierUnavailable:
            return 0

    async def run_until_quiet(self, max_rounds: int = 1_000) -> int:
        """Relay, deliver partition by partition, settle payments and send notifications,
        until nothing is left; return deliveries."""
        delivered = 0
        for _ in range(max_rounds):
            relayed = await self.relay()
            pending = self.pending()
            if not pending and not relayed and not await self.settle_payments():
                await self.send_notifications()
                return delivered
            for cursor in pending:
                while await self.deliver(cursor):
                    delivered += 1
        raise RuntimeError(f"the saga is not quiet after {max_rounds} rounds")

    async def snapshot(self) -> SagaSnapshot:
        b = self.backend
        return await read_snapshot(
            self.order_ids,
            order=b.order,
            inventory=b.inventory,
            payment=b.payment,
            notification=b.notification,
        )

    async def conservation(self) -> list[str]:
        """Violations of what holds at every moment (stock conserved, one charge per order)."""
        return conservation_violations(await self.snapshot(), self.initial_stock)

    async def violations(self) -> list[str]:
        """Every invariant (README: saga rules), undelivered messages and dead letters."""
        problems = invariant_violations(await self.snapshot(), self.initial_stock)
        problems += [f"undelivered messages at {cursor}" for cursor in self.pending()]
        problems += [f"dead-lettered: {letter}" for letter in self.dead_letters]
        return problems

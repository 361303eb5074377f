"""The order service: place orders idempotently, move each saga on, cancel overdue ones."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from uuid import UUID

from pydantic import Field, field_validator

from core_saga.handlers.exactly_once import Apply, apply_batch, apply_once, new_envelope
from core_saga.ids import new_id
from core_saga.messages import (
    MAX_AMOUNT,
    Currency,
    Envelope,
    Event,
    Instant,
    LineItem,
    Money,
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    PaymentFailed,
    PaymentSucceeded,
    Price,
    Quantity,
    StockRejected,
    StockReleaseRequested,
    StockReserved,
    WireModel,
)
from core_saga.orders import (
    DEFAULT_SAGA_TIMEOUT,
    TIMEOUT_REASON,
    Order,
    OrderStatus,
    order_total,
)
from core_saga.ports import (
    Around,
    Clock,
    DomainError,
    KeyClaim,
    OrderUnitOfWork,
    StoredResponse,
)

logger = logging.getLogger(__name__)

DEFAULT_KEY_TTL: Final = timedelta(hours=24)


class OrderLine(LineItem):
    """A requested line: JSON numbers only, a unit price of at least 0.01 (events are laxer)."""

    quantity: Quantity
    unit_price: Price


class PlaceOrder(WireModel):
    """The body of ``POST /api/orders``."""

    customer_id: UUID
    items: tuple[OrderLine, ...] = Field(min_length=1, max_length=100)
    currency: Currency = "EUR"

    @field_validator("items")
    @classmethod
    def _total_fits(cls, items: tuple[OrderLine, ...]) -> tuple[OrderLine, ...]:
        if order_total(items) >= MAX_AMOUNT:
            raise ValueError(f"the order total must be below {MAX_AMOUNT}")
        return items


def request_hash(request: PlaceOrder) -> str:
    """SHA-256 of the validated request as canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(
        request.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class OrderView(WireModel):
    """An order as the API shows it."""

    id: UUID
    customer_id: UUID
    status: OrderStatus
    total_amount: Money
    currency: str
    items: tuple[LineItem, ...]
    created_at: Instant
    updated_at: Instant | None
    cancellation_reason: str | None


def order_view(order: Order) -> dict[str, Any]:
    """The JSON body for ``order``: camelCase, money as numbers, ISO timestamps."""
    view = OrderView(
        id=order.id,
        customer_id=order.customer_id,
        status=order.status,
        total_amount=order.total_amount,
        currency=order.currency,
        items=order.items,
        created_at=order.created_at,
        updated_at=order.updated_at,
        cancellation_reason=order.cancellation_reason,
    )
    return view.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class PlaceOrderOutcome:
    """What ``POST /api/orders`` answers: 201 created, 200 replayed, 409 conflict."""

    kind: Literal["created", "replayed", "conflict"]
    status_code: int
    body: Any

    @classmethod
    def conflict(cls, detail: str) -> PlaceOrderOutcome:
        problem = {"type": "about:blank", "title": "Conflict", "status": 409, "detail": detail}
        return cls("conflict", 409, problem)


def _repeat(stored: StoredResponse, fingerprint: str) -> PlaceOrderOutcome:
    """The answer to a key already claimed: the stored response, or a conflict."""
    if stored.request_hash != fingerprint:
        return PlaceOrderOutcome.conflict("Idempotency-Key was already used for another request")
    if stored.status_code is None:
        return PlaceOrderOutcome.conflict("a request with this Idempotency-Key is in progress")
    return PlaceOrderOutcome("replayed", 200, stored.body)


def cancellation(order: Order, *, release: bool) -> list[Event]:
    """What a cancellation tells the others; ``release`` when stock may be held or in flight."""
    events: list[Event] = [
        OrderCancelled(
            order_id=order.id,
            customer_id=order.customer_id,
            reason=order.cancellation_reason or "",
        )
    ]
    if release:
        events.append(StockReleaseRequested(order_id=order.id, items=order.items))
    return events


@dataclass
class OrderService:
    """Places orders and applies inventory and payment outcomes to them (README: saga rules)."""

    uow: Callable[[], OrderUnitOfWork]
    clock: Clock
    saga_timeout: timedelta = DEFAULT_SAGA_TIMEOUT
    key_ttl: timedelta = DEFAULT_KEY_TTL
    new_order_id: Callable[[], UUID] = new_id  # a test may make ids (and partitions) repeatable
    on_settled: Callable[[Order], None] | None = None  # after commit, per order that ended
    subscriptions: frozenset[str] = field(
        default=frozenset({"StockReserved", "StockRejected", "PaymentSucceeded", "PaymentFailed"}),
        init=False,
    )

    async def place_order(self, request: PlaceOrder, idempotency_key: str) -> PlaceOrderOutcome:
        """Create the order, its OrderCreated and the saved response in one transaction.

        The key is claimed with the response it will replay (the order is made in memory
        first): a repeat with the same request replays the stored body, one with another
        request is a conflict, and neither creates anything.
        """
        fingerprint = request_hash(request)
        async with self.uow() as uow:
            now = self.clock.now()
            order, created = self._new_order(request, now)
            body = order_view(order)
            claim = KeyClaim(idempotency_key, fingerprint, now, now + self.key_ttl, (201, body))
            stored = await uow.place(order, created, claim)
        if stored is not None:
            return _repeat(stored, fingerprint)
        return PlaceOrderOutcome("created", 201, body)

    def _new_order(self, request: PlaceOrder, now: datetime) -> tuple[Order, Envelope]:
        order_id = self.new_order_id()
        items = tuple(
            LineItem(product_id=line.product_id, quantity=line.quantity, unit_price=line.unit_price)
            for line in request.items
        )
        event = OrderCreated(
            order_id=order_id,
            customer_id=request.customer_id,
            items=items,
            total_amount=order_total(items),
            currency=request.currency,
        )
        created = new_envelope(event, now, None)
        order = Order.place(
            order_id,
            request.customer_id,
            items,
            request.currency,
            now,
            created.event_id,
            self.saga_timeout,
        )
        return order, created

    async def handle(self, envelope: Envelope) -> None:
        if envelope.event_type not in self.subscriptions:
            return
        settled: list[Order] = []
        await apply_once(self.uow, self.clock, envelope, self._applying(settled))
        self._report(settled)  # only after the commit; empty for a duplicate

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        settled: list[Order] = []
        await apply_batch(self.uow, self.clock, envelopes, self._applying(settled), around=around)
        self._report(settled)  # only after the commit: a rolled-back batch settled nothing

    def _applying(self, settled: list[Order]) -> Apply[OrderUnitOfWork]:
        async def apply(uow: OrderUnitOfWork, envelope: Envelope) -> list[Event]:
            return await self._apply(uow, envelope, settled)

        return apply

    def _report(self, settled: list[Order]) -> None:
        if self.on_settled is not None:
            for order in settled:
                self.on_settled(order)

    async def _apply(
        self, uow: OrderUnitOfWork, envelope: Envelope, settled: list[Order]
    ) -> list[Event]:
        """Apply one outcome to its order; an order that ends here is added to ``settled``."""
        event = envelope.payload
        order = await uow.orders.get(event.order_id, for_update=True)
        if order is None:
            return []  # not an order of ours: recorded in the inbox and ignored
        now = self.clock.now()
        events: list[Event] = []
        if isinstance(event, StockReserved):
            changed = order.stock_reserved(now, envelope.event_id)
        elif isinstance(event, PaymentSucceeded):
            changed = order.payment_succeeded(now, envelope.event_id)
            if changed:
                events = [OrderConfirmed(order_id=order.id, customer_id=order.customer_id)]
        elif isinstance(event, PaymentFailed | StockRejected):
            changed = order.cancel(event.reason, now, envelope.event_id, envelope.event_type)
            if changed:  # a rejected order holds no stock; a failed payment followed a reservation
                events = cancellation(order, release=isinstance(event, PaymentFailed))
        else:
            raise DomainError(f"the order service does not apply {envelope.event_type}")
        if changed:
            await uow.orders.save(order)
        if events:  # only a move to CONFIRMED or CANCELLED emits events
            settled.append(order)
        return events

    async def sweep_overdue(self, limit: int = 100) -> int:
        """Sweep ``limit`` at a time until a sweep is not full; return how many were cancelled.

        Once a tick, a single sweep would cancel at most ``limit`` a second per replica: a
        backlog left by an outage of inventory or payment (orders keep coming, hundreds a
        second) would then outgrow it, and orders long overdue would confirm late.

        A batch that fails after others committed ends the sweep with what they did: they
        stay done, and the job that ran it is seen to have done something (its trace, which
        their events name, is exported). The failure comes again at the next tick, first.
        """
        total = 0
        while True:
            try:
                cancelled = await self.sweep_deadlines(limit)
            except Exception as exc:
                if not total:
                    raise
                logger.warning(
                    "the deadline sweep stopped after cancelling %d order(s) (%r); the next "
                    "sweep goes on",
                    total,
                    exc,
                )
                return total
            total += cancelled
            if cancelled < limit:
                return total

    async def sweep_deadlines(self, limit: int = 100) -> int:
        """Cancel up to ``limit`` overdue orders (reason ``timeout``); return how many."""
        cancelled: list[Order] = []
        async with self.uow() as uow:
            now = self.clock.now()
            for order in await uow.orders.overdue(now, limit):
                notice = OrderCancelled(
                    order_id=order.id, customer_id=order.customer_id, reason=TIMEOUT_REASON
                )
                envelope = new_envelope(notice, now, None)
                if not order.cancel(TIMEOUT_REASON, now, envelope.event_id, envelope.event_type):
                    continue
                await uow.orders.save(order)
                await uow.outbox.add(envelope)
                release = StockReleaseRequested(order_id=order.id, items=order.items)
                await uow.outbox.add(new_envelope(release, now, envelope.event_id))
                cancelled.append(order)
            await uow.commit()
        self._report(cancelled)
        return len(cancelled)

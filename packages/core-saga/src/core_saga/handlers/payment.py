"""The payment service: charge a reserved order once, never after a cancel, refund after one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from core_saga.handlers.after_commit import (
    QuietAfterCommit,
    RemoteUnavailable,
    Waiting,
    call_each,
)
from core_saga.handlers.exactly_once import Apply, apply_batch, apply_once, new_envelope
from core_saga.ids import new_id
from core_saga.messages import (
    Envelope,
    Event,
    OrderCancelled,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
    StockReserved,
)
from core_saga.payments import (
    DECLINED,
    ChargeResult,
    ForcedOutcome,
    Payment,
    PaymentStatus,
    simulated_outcome,
)
from core_saga.ports import (
    Around,
    Clock,
    DomainError,
    PaymentGateway,
    PaymentUnitOfWork,
    Position,
)

logger = logging.getLogger(__name__)

SETTLE_AFTER = timedelta(seconds=10)
"""How long a payment may wait on the gateway before the sweep calls it again: longer than a
consumer batch's calls usually take, well within the saga's 30 s deadline (an order that
times out is charged only to be refunded). A batch whose calls take longer (each may take
``GATEWAY_TIMEOUT``, ``after_commit.CONCURRENCY`` at a time) meets the sweep calling the
same payments: harmless (the gateway deduplicates, one outcome is recorded) but wasted calls."""
GATEWAY_TIMEOUT = timedelta(seconds=10)
"""The longest a gateway call may take: a call that hangs would hold its batch, and its
partition, for good. One that times out leaves its payment due (it may have been charged:
the repeated call, deduplicated, tells)."""
Due = tuple[Payment, UUID | None, Mapping[str, str]]
"""A payment waiting on the gateway, the event that left it so (None from the sweep), and
the headers its outcome's events carry: the consuming event's trace context (in a batch,
recorded after the commit, outside that event's span), none from the sweep."""
Outcome = tuple[Payment, UUID | None, Mapping[str, str], ChargeResult | None]
"""A due payment, its cause and headers, and the gateway's answer (None: a refund went through)."""


class GatewayUnavailable(RemoteUnavailable):
    """A gateway call failed: its payment stays due, to be settled by a later sweep."""


@dataclass(frozen=True)
class SimulatedGateway:
    """A ``PaymentGateway`` that decides from the order id alone (PAYMENT_SUCCESS_RATE), so a
    repeated call answers alike; ``latency`` seconds per call, as a remote one takes."""

    success_rate: float = 0.8
    forced: ForcedOutcome | None = None
    latency: float = 0.0

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        if self.latency:
            await asyncio.sleep(self.latency)
        return simulated_outcome(order_id, self.success_rate, self.forced)

    async def refund(self, payment_id: UUID, amount: Decimal) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)


@dataclass
class PaymentService:
    """Applies StockReserved and OrderCancelled to payments (README: saga rules), in two steps.

    A gateway is a remote call: awaited in the consuming transaction, it would hold the
    batch's order locks and a pooled connection for as long as it takes. So that
    transaction only records what is due (a PENDING charge, a REFUNDING payment); after its
    commit the gateway is called outside any transaction, and a second transaction records
    each outcome with its event. A payment left due (a crash between the two, a gateway
    error) is settled by ``settle_stale``, which calls the gateway again: it must
    deduplicate (see ``PaymentGateway``).
    """

    uow: Callable[[], PaymentUnitOfWork]
    clock: Clock
    gateway: PaymentGateway
    settle_after: timedelta = SETTLE_AFTER
    gateway_timeout: timedelta = GATEWAY_TIMEOUT
    subscriptions: frozenset[str] = field(
        default=frozenset({"StockReserved", "OrderCancelled"}), init=False
    )
    _after_commit: QuietAfterCommit = field(init=False, repr=False)
    _due: Waiting[Payment] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._after_commit = QuietAfterCommit(self.clock, logger, "payments")
        self._due = Waiting(self._read_due, lambda payment: (payment.changed_at, payment.id))

    async def handle(self, envelope: Envelope) -> None:
        if envelope.event_type in self.subscriptions:
            due: list[Due] = []
            await apply_once(self.uow, self.clock, envelope, self._applying(due))
            await self._after_commit.run(lambda: self.settle(due), len(due))

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        due: list[Due] = []
        await apply_batch(self.uow, self.clock, envelopes, self._applying(due), around=around)
        await self._after_commit.run(lambda: self.settle(due), len(due))

    def _applying(self, due: list[Due]) -> Apply[PaymentUnitOfWork]:
        """Applies an event; collects in ``due`` the payments it left waiting on the gateway."""

        async def apply(uow: PaymentUnitOfWork, envelope: Envelope) -> list[Event]:
            event = envelope.payload
            await uow.payments.lock_order(event.order_id)
            if isinstance(event, StockReserved):
                payment = await self._charge(uow, event)
            elif isinstance(event, OrderCancelled):
                payment = await self._refund(uow, event)
            else:
                raise DomainError(f"the payment service does not apply {envelope.event_type}")
            if payment is not None:
                due.append((payment, envelope.event_id, uow.outbox.context()))
            return []

        return apply

    async def _charge(self, uow: PaymentUnitOfWork, event: StockReserved) -> Payment | None:
        """At most one charge per order, and none once the order was seen cancelled."""
        if await uow.payments.was_cancelled(event.order_id):
            return None
        if await uow.payments.get_by_order(event.order_id) is not None:
            return None
        now = self.clock.now()
        payment = Payment(
            new_id(),
            event.order_id,
            event.total_amount,
            event.currency,
            PaymentStatus.PENDING,
            None,
            now,
            now,
        )
        await uow.payments.add(payment)
        return payment

    async def _refund(self, uow: PaymentUnitOfWork, event: OrderCancelled) -> Payment | None:
        """Remember the cancellation; a charge that succeeded is to be given back.

        A charge still PENDING is refunded once it settles: its settlement sees the
        cancellation."""
        await uow.payments.mark_cancelled(event.order_id)
        payment = await uow.payments.get_by_order(event.order_id)
        if payment is None or payment.status is not PaymentStatus.SUCCEEDED:
            return None
        payment.status = PaymentStatus.REFUNDING
        payment.updated_at = self.clock.now()
        await uow.payments.save(payment)
        return payment

    async def settle_stale(self, limit: int = 100, after: timedelta | None = None) -> int:
        """Settle the payments due for ``after`` (``settle_after``) or longer, ``limit`` at a
        time, every page once; return how many settled. If a gateway call failed, the
        ``GatewayUnavailable`` is raised after the last page, counting what all the pages
        recorded (``committed``)."""
        before = self.clock.now() - (self.settle_after if after is None else after)

        async def settle(page: Sequence[Payment]) -> int:
            return await self.settle([(payment, None, {}) for payment in page])

        return await self._due.sweep(before, settle, limit=limit, failed=GatewayUnavailable)

    async def longest_wait(self) -> timedelta:
        """How long the payment waiting longest on the gateway has waited; zero if none."""
        return await self._due.longest(self.clock.now())

    async def _read_due(
        self, before: datetime, limit: int, after: Position | None
    ) -> Sequence[Payment]:
        async with self.uow() as uow:
            return await uow.payments.due(before, limit, after=after)

    async def settle(self, due: Sequence[Due]) -> int:
        """Call the gateway for each due payment (outside any transaction), then record the
        outcomes and their events in one transaction; return how many settled.

        A payment another replica (or the sweep) settled meanwhile is left as it is. A
        charge that succeeded for an order cancelled meanwhile is refunded in turn. If a
        call failed, the others are recorded, then ``GatewayUnavailable`` is raised, with how
        many outcomes were recorded (``committed``).
        """
        if not due:
            return 0
        outcomes, failures = await self._call_gateway(due)
        settled, refunds = await self._record(outcomes) if outcomes else (0, [])
        recorded = settled + len(refunds)
        try:
            settled += await self.settle(refunds)
        except GatewayUnavailable as exc:
            exc.committed += recorded
            raise
        if failures:
            raise GatewayUnavailable(
                f"the payment gateway failed on {len(failures)} of {len(due)} payments "
                f"(they stay due): {failures[0]!r}",
                committed=recorded,
            ) from failures[0]
        return settled

    async def _record(self, outcomes: Sequence[Outcome]) -> tuple[int, list[Due]]:
        """The outcomes and their events, in one transaction: how many settled, and the
        charges to refund in turn (their orders were cancelled meanwhile)."""
        refunds: list[Due] = []
        settled = 0
        async with self.uow() as uow:
            await uow.hold({payment.order_id for payment, _, _, _ in outcomes})
            now = self.clock.now()
            for called, cause, carried, result in outcomes:
                payment = await uow.payments.get_by_order(called.order_id)
                if payment is None or payment.id != called.id or payment.status != called.status:
                    continue  # settled meanwhile
                cancelled = await uow.payments.was_cancelled(payment.order_id)
                for event in _settle(payment, result, cancelled=cancelled, now=now):
                    await uow.outbox.add(new_envelope(event, now, cause), carried)
                await uow.payments.save(payment)
                if payment.status.due:
                    refunds.append((payment, cause, carried))
                else:
                    settled += 1
            await uow.commit()
        return settled, refunds

    async def _call_gateway(self, due: Sequence[Due]) -> tuple[list[Outcome], list[Exception]]:
        """Each payment's gateway call: the outcomes, and the exceptions of the calls that
        failed (a bug, not an outage, logged as one)."""

        async def call(entry: Due) -> ChargeResult | None:
            payment = entry[0]
            if payment.status is PaymentStatus.PENDING:
                return await self.gateway.charge(payment.order_id, payment.amount, payment.currency)
            await self.gateway.refund(payment.id, payment.amount)
            return None

        def on_bug(entry: Due, exc: Exception) -> None:
            payment = entry[0]
            logger.error(
                "the payment gateway's adapter failed on payment %s; it stays %s",
                payment.id,
                payment.status,
                exc_info=exc,
                extra={"order_id": str(payment.order_id)},
            )

        answered, failures = await call_each(
            due, call, each_within=self.gateway_timeout, on_bug=on_bug
        )
        return [(*entry, result) for entry, result in answered], failures


def _settle(
    payment: Payment, result: ChargeResult | None, *, cancelled: bool, now: datetime
) -> list[Event]:
    """Record a gateway call's outcome on ``payment``; the events it makes.

    A charge that succeeded for an order seen cancelled is announced, then refunded: the
    customer was charged, and is paid back.
    """
    payment.updated_at = now
    if payment.status is PaymentStatus.REFUNDING:
        payment.status = PaymentStatus.REFUNDED
        return [
            PaymentRefunded(order_id=payment.order_id, payment_id=payment.id, amount=payment.amount)
        ]
    if result is None:
        raise ValueError(f"payment {payment.id} is {payment.status}: a charge has an outcome")
    if not result.succeeded:
        payment.status = PaymentStatus.FAILED
        payment.reason = result.reason or DECLINED
        return [
            PaymentFailed(order_id=payment.order_id, amount=payment.amount, reason=payment.reason)
        ]
    payment.status = PaymentStatus.REFUNDING if cancelled else PaymentStatus.SUCCEEDED
    return [
        PaymentSucceeded(order_id=payment.order_id, payment_id=payment.id, amount=payment.amount)
    ]

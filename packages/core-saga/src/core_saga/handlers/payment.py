"""The payment service: charge a reserved order once, never after a cancel, refund after one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

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
    InfrastructureError,
    PaymentGateway,
    PaymentUnitOfWork,
)

logger = logging.getLogger(__name__)

SETTLE_AFTER = timedelta(seconds=10)
"""How long a payment may wait on the gateway before the sweep calls it again: longer than a
consumer batch's calls usually take, well within the saga's 30 s deadline (an order that
times out is charged only to be refunded). A batch whose calls take longer (each may take
``GATEWAY_TIMEOUT``, ``GATEWAY_CALLS`` at a time) meets the sweep calling the same payments:
harmless (the gateway deduplicates, one outcome is recorded) but wasted calls."""
GATEWAY_TIMEOUT = timedelta(seconds=10)
"""The longest a gateway call may take: a call that hangs would hold its batch, and its
partition, for good. One that times out leaves its payment due (it may have been charged:
the repeated call, deduplicated, tells)."""
GATEWAY_CALLS = 16
"""Gateway calls in flight per settlement: a batch of 100 charges waits about 7 calls' time."""

QUIET_FOR = timedelta(seconds=30)
"""The least time between two warnings of settlements failing after a consumed batch."""

Due = tuple[Payment, UUID | None]
"""A payment waiting on the gateway, and the event that made it due (None from the sweep)."""
Outcome = tuple[Payment, UUID | None, ChargeResult | None]
"""A due payment, its cause, and the gateway's answer (None: a refund went through)."""


class GatewayUnavailable(InfrastructureError):
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
    """Applies StockReserved and OrderCancelled to payments (DESIGN §3), in two steps.

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
    _warned_at: datetime | None = field(default=None, init=False, repr=False)

    async def handle(self, envelope: Envelope) -> None:
        if envelope.event_type in self.subscriptions:
            due: list[Due] = []
            await apply_once(self.uow, self.clock, envelope, self._applying(due))
            await self._settle_now(due)

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        due: list[Due] = []
        await apply_batch(self.uow, self.clock, envelopes, self._applying(due), around=around)
        await self._settle_now(due)

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
                due.append((payment, envelope.event_id))
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

    async def _settle_now(self, due: list[Due]) -> None:
        """Right after the commit that made them due. What fails here stays due, for
        ``settle_stale``: failing the consumed batch would only redeliver events its inbox
        now skips. An outage is said at most once per ``QUIET_FOR``; a bug every time."""
        try:
            await self.settle(due)
        except InfrastructureError as exc:
            now = self.clock.now()
            if self._warned_at is None or now - self._warned_at >= QUIET_FOR:
                self._warned_at = now
                logger.warning("%s; the sweep settles them later", exc, exc_info=exc)
        except Exception:
            logger.exception("settling %d payments failed; the sweep tries again", len(due))

    async def settle_stale(self, limit: int = 100, after: timedelta | None = None) -> int:
        """Settle the payments due for ``after`` (``settle_after``) or longer, ``limit`` at a
        time, every page once; return how many settled. If a gateway call failed, the
        ``GatewayUnavailable`` is raised after the last page: a payment that keeps failing
        (the longest waiting, first on every read) must not hold back the others."""
        before = self.clock.now() - (self.settle_after if after is None else after)
        total, failed, position = 0, None, None
        while True:
            async with self.uow() as uow:
                page = await uow.payments.due(before, limit, after=position)
            try:
                total += await self.settle([(payment, None) for payment in page])
            except GatewayUnavailable as exc:
                failed = exc
            if len(page) < limit:
                break
            position = (page[-1].changed_at, page[-1].id)
        if failed is not None:
            raise failed
        return total

    async def longest_wait(self) -> timedelta:
        """How long the payment waiting longest on the gateway has waited; zero if none."""
        async with self.uow() as uow:
            now = self.clock.now()
            oldest = await uow.payments.due(now, 1)
        return now - oldest[0].changed_at if oldest else timedelta(0)

    async def settle(self, due: Sequence[Due]) -> int:
        """Call the gateway for each due payment (outside any transaction), then record the
        outcomes and their events in one transaction; return how many settled.

        A payment another replica (or the sweep) settled meanwhile is left as it is. A
        charge that succeeded for an order cancelled meanwhile is refunded in turn. If a
        call failed, the others are recorded, then ``GatewayUnavailable`` is raised.
        """
        if not due:
            return 0
        outcomes, failures = await self._call_gateway(due)
        settled, refunds = await self._record(outcomes) if outcomes else (0, [])
        settled += await self.settle(refunds)
        if failures:
            raise GatewayUnavailable(
                f"the payment gateway failed on {len(failures)} of {len(due)} payments "
                f"(they stay due): {failures[0]!r}"
            ) from failures[0]
        return settled

    async def _record(self, outcomes: Sequence[Outcome]) -> tuple[int, list[Due]]:
        """The outcomes and their events, in one transaction: how many settled, and the
        charges to refund in turn (their orders were cancelled meanwhile)."""
        refunds: list[Due] = []
        settled = 0
        async with self.uow() as uow:
            await uow.hold({payment.order_id for payment, _, _ in outcomes})
            now = self.clock.now()
            for called, cause, result in outcomes:
                payment = await uow.payments.get_by_order(called.order_id)
                if payment is None or payment.id != called.id or payment.status != called.status:
                    continue  # settled meanwhile
                cancelled = await uow.payments.was_cancelled(payment.order_id)
                for event in _settle(payment, result, cancelled=cancelled, now=now):
                    await uow.outbox.add(new_envelope(event, now, cause))
                await uow.payments.save(payment)
                if payment.status.due:
                    refunds.append((payment, cause))
                else:
                    settled += 1
            await uow.commit()
        return settled, refunds

    async def _call_gateway(self, due: Sequence[Due]) -> tuple[list[Outcome], list[Exception]]:
        """Each payment's gateway call, ``GATEWAY_CALLS`` at a time: the outcomes, and the
        exceptions of the calls that failed."""
        calls = asyncio.Semaphore(GATEWAY_CALLS)

        async def call(payment: Payment) -> ChargeResult | None:
            async with calls, asyncio.timeout(self.gateway_timeout.total_seconds()):
                if payment.status is PaymentStatus.PENDING:
                    return await self.gateway.charge(
                        payment.order_id, payment.amount, payment.currency
                    )
                await self.gateway.refund(payment.id, payment.amount)
                return None

        results = await asyncio.gather(
            *(call(payment) for payment, _ in due), return_exceptions=True
        )
        outcomes: list[Outcome] = []
        failures: list[Exception] = []
        for (payment, cause), result in zip(due, results, strict=True):
            if isinstance(result, Exception):
                if not is_outage(result):  # a bug: said each time, with its traceback
                    logger.error(
                        "the payment gateway's adapter failed on payment %s; it stays %s",
                        payment.id,
                        payment.status,
                        exc_info=result,
                        extra={"order_id": str(payment.order_id)},
                    )
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result  # cancelled
            else:
                outcomes.append((payment, cause, result))
        return outcomes, failures


def is_outage(exc: Exception) -> bool:
    """The gateway unreachable, refusing, or slower than ``gateway_timeout``. Anything else
    is a bug, logged as one; either way the payment stays due, the others of its settlement
    are recorded, and the sweep calls it again."""
    return isinstance(exc, InfrastructureError | OSError | TimeoutError)


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

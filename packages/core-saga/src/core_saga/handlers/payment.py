"""The payment service: charge a reserved order once, never after a cancel, refund after one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from core_saga.handlers.exactly_once import apply_batch, apply_once
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
from core_saga.ports import Around, Clock, DomainError, PaymentGateway, PaymentUnitOfWork


@dataclass(frozen=True)
class SimulatedGateway:
    """A ``PaymentGateway`` that decides from the order id alone (PAYMENT_SUCCESS_RATE)."""

    success_rate: float = 0.8
    forced: ForcedOutcome | None = None

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        return simulated_outcome(order_id, self.success_rate, self.forced)

    async def refund(self, payment_id: UUID, amount: Decimal) -> None:
        return None


@dataclass
class PaymentService:
    """Applies StockReserved and OrderCancelled to payments (DESIGN §3)."""

    uow: Callable[[], PaymentUnitOfWork]
    clock: Clock
    gateway: PaymentGateway
    subscriptions: frozenset[str] = field(
        default=frozenset({"StockReserved", "OrderCancelled"}), init=False
    )

    async def handle(self, envelope: Envelope) -> None:
        if envelope.event_type in self.subscriptions:
            await apply_once(self.uow, self.clock, envelope, self._apply)

    async def handle_batch(
        self, envelopes: Sequence[Envelope], around: Around | None = None
    ) -> None:
        await apply_batch(self.uow, self.clock, envelopes, self._apply, around=around)

    async def _apply(self, uow: PaymentUnitOfWork, envelope: Envelope) -> list[Event]:
        event = envelope.payload
        await uow.payments.lock_order(event.order_id)
        if isinstance(event, StockReserved):
            return await self._charge(uow, event)
        if isinstance(event, OrderCancelled):
            return await self._refund(uow, event)
        raise DomainError(f"the payment service does not apply {envelope.event_type}")

    async def _charge(self, uow: PaymentUnitOfWork, event: StockReserved) -> list[Event]:
        """At most one charge per order, and none once the order was seen cancelled."""
        if await uow.payments.was_cancelled(event.order_id):
            return []
        if await uow.payments.get_by_order(event.order_id) is not None:
            return []
        amount = event.total_amount
        result = await self.gateway.charge(event.order_id, amount, event.currency)
        now = self.clock.now()
        status = PaymentStatus.SUCCEEDED if result.succeeded else PaymentStatus.FAILED
        reason = None if result.succeeded else result.reason or DECLINED
        payment = Payment(
            new_id(), event.order_id, amount, event.currency, status, reason, now, now
        )
        await uow.payments.add(payment)
        if reason is None:
            return [PaymentSucceeded(order_id=event.order_id, payment_id=payment.id, amount=amount)]
        return [PaymentFailed(order_id=event.order_id, amount=amount, reason=reason)]

    async def _refund(self, uow: PaymentUnitOfWork, event: OrderCancelled) -> list[Event]:
        """Remember the cancellation; give back a charge that already succeeded."""
        await uow.payments.mark_cancelled(event.order_id)
        payment = await uow.payments.get_by_order(event.order_id)
        if payment is None or payment.status is not PaymentStatus.SUCCEEDED:
            return []
        await self.gateway.refund(payment.id, payment.amount)
        payment.status = PaymentStatus.REFUNDED
        payment.updated_at = self.clock.now()
        await uow.payments.save(payment)
        return [
            PaymentRefunded(order_id=event.order_id, payment_id=payment.id, amount=payment.amount)
        ]

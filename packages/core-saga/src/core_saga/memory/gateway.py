"""A payment gateway a test steers per order, recording every charge and refund."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from core_saga.payments import ChargeResult, ForcedOutcome, simulated_outcome
from core_saga.ports import InfrastructureError


class ScriptedGateway:
    """Outcomes decided per order by the test, else by the simulated success rate.

    Deduplicates as ``PaymentGateway`` asks of a real one: a charge of an order already
    charged answers the first outcome and charges nothing; a refund of a payment already
    refunded refunds nothing. ``down`` makes every call fail before it acts, as a gateway
    outage does; ``answers_lost`` makes every call act, then fail (a timeout after the
    gateway charged: only a repeated call tells the outcome).
    """

    def __init__(self, success_rate: float = 0.8) -> None:
        self.success_rate = success_rate
        self.down = False
        self.answers_lost = False
        self.outcomes: dict[UUID, bool] = {}
        self.charges: list[tuple[UUID, Decimal]] = []
        self.refunds: list[tuple[UUID, Decimal]] = []
        self._charged: dict[UUID, ChargeResult] = {}

    def decide(self, order_id: UUID, succeeded: bool) -> None:
        self.outcomes[order_id] = succeeded

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        self._answer()
        if order_id in self._charged:
            return self._charged[order_id]
        decided = self.outcomes.get(order_id)
        forced: ForcedOutcome | None = (
            None if decided is None else ("success" if decided else "failure")
        )
        self.charges.append((order_id, amount))
        result = self._charged[order_id] = simulated_outcome(order_id, self.success_rate, forced)
        self._lose_answer()
        return result

    async def refund(self, payment_id: UUID, amount: Decimal) -> None:
        self._answer()
        if all(refunded != payment_id for refunded, _ in self.refunds):
            self.refunds.append((payment_id, amount))
        self._lose_answer()

    def _answer(self) -> None:
        if self.down:
            raise InfrastructureError("the payment gateway is down")

    def _lose_answer(self) -> None:
        if self.answers_lost:
            raise TimeoutError("the payment gateway's answer was lost")

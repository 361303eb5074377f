"""A payment gateway a test steers per order, recording every charge and refund."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from core_saga.payments import ChargeResult, ForcedOutcome, simulated_outcome


class ScriptedGateway:
    """Outcomes decided per order by the test, else by the simulated success rate."""

    def __init__(self, success_rate: float = 0.8) -> None:
        self.success_rate = success_rate
        self.outcomes: dict[UUID, bool] = {}
        self.charges: list[tuple[UUID, Decimal]] = []
        self.refunds: list[tuple[UUID, Decimal]] = []

    def decide(self, order_id: UUID, succeeded: bool) -> None:
        self.outcomes[order_id] = succeeded

    async def charge(self, order_id: UUID, amount: Decimal, currency: str) -> ChargeResult:
        self.charges.append((order_id, amount))
        decided = self.outcomes.get(order_id)
        forced: ForcedOutcome | None = (
            None if decided is None else ("success" if decided else "failure")
        )
        return simulated_outcome(order_id, self.success_rate, forced)

    async def refund(self, payment_id: UUID, amount: Decimal) -> None:
        self.refunds.append((payment_id, amount))

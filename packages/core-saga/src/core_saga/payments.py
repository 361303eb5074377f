"""Payments: at most one charge per order, no charge after a cancellation, refund after one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal
from uuid import UUID


class PaymentStatus(StrEnum):
    """PENDING and REFUNDING wait on the gateway: the call runs outside any transaction."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"

    @property
    def due(self) -> bool:
        """A gateway call (a charge, a refund) is due before the payment settles."""
        return self in (PaymentStatus.PENDING, PaymentStatus.REFUNDING)


@dataclass
class Payment:
    id: UUID
    order_id: UUID
    amount: Decimal
    currency: str
    status: PaymentStatus
    reason: str | None
    created_at: datetime
    updated_at: datetime | None = None

    @property
    def changed_at(self) -> datetime:
        """When it last changed: for a due payment, since when it has waited on the gateway."""
        return self.updated_at or self.created_at


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    reason: str | None = None


ForcedOutcome = Literal["success", "failure"]
DECLINED = "Payment declined by provider"


def simulated_outcome(
    order_id: UUID, success_rate: float, forced: ForcedOutcome | None = None
) -> ChargeResult:
    """The simulated gateway's answer, a pure function of the order id (so replays agree)."""
    if forced is not None:
        return ChargeResult(True) if forced == "success" else ChargeResult(False, DECLINED)
    bucket = int.from_bytes(hashlib.sha256(order_id.bytes).digest()[:8], "big") % 10_000
    if bucket < round(success_rate * 10_000):
        return ChargeResult(True)
    return ChargeResult(False, DECLINED)

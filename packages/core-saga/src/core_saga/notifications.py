"""Notifications: exactly one per terminal order, saying how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID


class NotificationType(StrEnum):
    ORDER_CONFIRMED = "ORDER_CONFIRMED"
    ORDER_CANCELLED = "ORDER_CANCELLED"


@dataclass(frozen=True)
class Notification:
    id: UUID
    order_id: UUID
    type: NotificationType
    recipient: str
    message: str
    created_at: datetime
    sent: bool = False
    """Whether the notifier took it: stored unsent, sent after the commit that stored it or
    by a later sweep (``NotificationService``)."""

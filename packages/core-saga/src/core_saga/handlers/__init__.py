"""The use cases: one module per service, each an ``EventHandler`` over its unit of work."""

from core_saga.handlers.inventory import InventoryService
from core_saga.handlers.notification import LoggingNotifier, NotificationService
from core_saga.handlers.order import (
    OrderService,
    OrderView,
    PlaceOrder,
    PlaceOrderOutcome,
    order_view,
    request_hash,
)
from core_saga.handlers.payment import PaymentService, SimulatedGateway

__all__ = [
    "InventoryService",
    "LoggingNotifier",
    "NotificationService",
    "OrderService",
    "OrderView",
    "PaymentService",
    "PlaceOrder",
    "PlaceOrderOutcome",
    "SimulatedGateway",
    "order_view",
    "request_hash",
]

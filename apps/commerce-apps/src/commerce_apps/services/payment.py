"""Payment's HTTP API: the charges (and refunds) made for an order."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from core_saga.messages import Instant, Money, WireModel
from core_saga.payments import PaymentStatus
from core_saga.ports import LIST_LIMIT, PaymentUnitOfWork
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from commerce_apps.http.docs import Operation, list_of
from commerce_apps.http.params import MAX_LIST_LIMIT, query_limit, query_order_id, wire

ORDER_ID_PARAM = {"name": "orderId", "in": "query", "schema": {"type": "string", "format": "uuid"}}
LIMIT_PARAM = {
    "name": "limit",
    "in": "query",
    "description": "How many of the newest to return (they come oldest first)",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": LIST_LIMIT},
}


class PaymentBody(WireModel):
    id: UUID
    order_id: UUID
    amount: Money
    currency: str
    status: PaymentStatus
    reason: str | None
    created_at: Instant


OPERATIONS = (
    Operation(
        "GET",
        "/api/payments",
        "The newest payments, optionally of one order",
        {200: list_of(PaymentBody), 400: None},
        parameters=(ORDER_ID_PARAM, LIMIT_PARAM),
    ),
)


def payment_routes(uow: Callable[[], PaymentUnitOfWork]) -> list[BaseRoute]:
    async def list_payments(request: Request) -> JSONResponse:
        order_id, limit = query_order_id(request), query_limit(request)
        async with uow() as work:
            payments = await work.payments.list(order_id, limit=limit)
        return JSONResponse([wire(PaymentBody, p) for p in payments])

    return [Route("/api/payments", list_payments, methods=["GET"])]

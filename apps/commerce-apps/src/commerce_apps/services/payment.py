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
from commerce_apps.http.params import MAX_LIST_LIMIT, list_page, list_query

ORDER_ID_PARAM = {"name": "orderId", "in": "query", "schema": {"type": "string", "format": "uuid"}}
LIMIT_PARAM = {
    "name": "limit",
    "in": "query",
    "description": "How many of the newest to return (they come oldest first)",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": LIST_LIMIT},
}
BEFORE_PARAM = {
    "name": "before",
    "in": "query",
    "description": 'The cursor of a Link rel="next": the rows older than the page that gave it',
    "schema": {"type": "string"},
}
LIST_PARAMS = (ORDER_ID_PARAM, LIMIT_PARAM, BEFORE_PARAM)
LINK_HEADER = {
    "Link": {
        "description": 'On a full page without orderId: <the older rows>; rel="next" (RFC 8288)',
        "schema": {"type": "string"},
    }
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
        parameters=LIST_PARAMS,
        headers={200: LINK_HEADER},
    ),
)


def payment_routes(uow: Callable[[], PaymentUnitOfWork]) -> list[BaseRoute]:
    async def list_payments(request: Request) -> JSONResponse:
        query = list_query(request)
        async with uow() as work:
            payments = await work.payments.list(
                query.order_id, limit=query.limit, before=query.before
            )
        return list_page(request, query, payments, PaymentBody)

    return [Route("/api/payments", list_payments, methods=["GET"])]

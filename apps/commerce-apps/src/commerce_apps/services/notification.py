"""Notification's HTTP API: what each customer was told about their order."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from core_saga.messages import Instant, WireModel
from core_saga.notifications import NotificationType
from core_saga.ports import NotificationUnitOfWork
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from commerce_apps.http.docs import Operation, list_of
from commerce_apps.http.params import query_limit, query_order_id, wire
from commerce_apps.services.payment import LIMIT_PARAM, ORDER_ID_PARAM


class NotificationBody(WireModel):
    id: UUID
    order_id: UUID
    type: NotificationType
    recipient: str
    message: str
    created_at: Instant


OPERATIONS = (
    Operation(
        "GET",
        "/api/notifications",
        "The newest notifications, optionally of one order",
        {200: list_of(NotificationBody), 400: None},
        parameters=(ORDER_ID_PARAM, LIMIT_PARAM),
    ),
)


def notification_routes(uow: Callable[[], NotificationUnitOfWork]) -> list[BaseRoute]:
    async def list_notifications(request: Request) -> JSONResponse:
        order_id, limit = query_order_id(request), query_limit(request)
        async with uow() as work:
            notifications = await work.notifications.list(order_id, limit=limit)
        return JSONResponse([wire(NotificationBody, n) for n in notifications])

    return [Route("/api/notifications", list_notifications, methods=["GET"])]

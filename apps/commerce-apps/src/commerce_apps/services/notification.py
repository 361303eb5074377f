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
from commerce_apps.http.params import list_page, list_query
from commerce_apps.services.payment import LINK_HEADER, LIST_PARAMS


class NotificationBody(WireModel):
    id: UUID
    order_id: UUID
    type: NotificationType
    recipient: str
    message: str
    created_at: Instant
    sent: bool


OPERATIONS = (
    Operation(
        "GET",
        "/api/notifications",
        "The newest notifications, optionally of one order",
        {200: list_of(NotificationBody), 400: None},
        parameters=LIST_PARAMS,
        headers={200: LINK_HEADER},
    ),
)


def notification_routes(uow: Callable[[], NotificationUnitOfWork]) -> list[BaseRoute]:
    async def list_notifications(request: Request) -> JSONResponse:
        query = list_query(request)
        async with uow() as work:
            notifications = await work.notifications.list(
                query.order_id, limit=query.limit, before=query.before
            )
        return list_page(request, query, notifications, NotificationBody)

    return [Route("/api/notifications", list_notifications, methods=["GET"])]

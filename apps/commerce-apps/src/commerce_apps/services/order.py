"""Order's HTTP API: place an order idempotently, read it and its history."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from core_saga.handlers.order import OrderService, OrderView, PlaceOrder, order_view
from core_saga.messages import Instant, WireModel
from core_saga.orders import Order, OrderStatus
from core_saga.ports import OrderUnitOfWork
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from commerce_apps.http.body import read_json, validate
from commerce_apps.http.docs import Operation, list_of
from commerce_apps.http.params import not_found, path_id, wire
from commerce_apps.http.problems import PROBLEM_JSON, Problem

MAX_KEY_LENGTH = 255


class HistoryEntry(WireModel):
    """One status an order reached, when, and the event that moved it."""

    status: OrderStatus
    at: Instant
    event_id: UUID
    event_type: str


IDEMPOTENCY_KEY_PARAM = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}
LOCATION_HEADER = {
    "Location": {"description": "The order: /api/orders/{id}", "schema": {"type": "string"}}
}
OPERATIONS = (
    Operation(
        "POST",
        "/api/orders",
        "Place an order (idempotent per Idempotency-Key)",
        {200: OrderView, 201: OrderView, 400: None, 409: None, 413: None, 415: None, 422: None},
        request=PlaceOrder,
        parameters=(IDEMPOTENCY_KEY_PARAM,),
        headers={200: LOCATION_HEADER, 201: LOCATION_HEADER},
    ),
    Operation("GET", "/api/orders/{id}", "One order", {200: OrderView, 404: None}),
    Operation(
        "GET",
        "/api/orders/{id}/history",
        "Its status history",
        {200: list_of(HistoryEntry), 404: None},
    ),
)


def idempotency_key(request: Request) -> str:
    """1–255 printable ASCII characters, else 400.

    Whitespace around the value is no part of it (RFC 9110 §5.5): uvicorn strips it before
    the value but not after, and ``k `` was another key than ``k``, so a proxy that trims
    placed the order again. Two values are refused, not one of them picked."""
    values = request.headers.getlist("idempotency-key")
    if not values:
        raise Problem(400, "Bad Request", "the Idempotency-Key header is required")
    if len(values) > 1:
        raise Problem(400, "Bad Request", "send one Idempotency-Key header, not several")
    key = values[0].strip(" \t")
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise Problem(
            400, "Bad Request", "Idempotency-Key must be 1-255 printable ASCII characters"
        )
    return key


def order_routes(service: OrderService, uow: Callable[[], OrderUnitOfWork]) -> list[BaseRoute]:
    async def place(request: Request) -> JSONResponse:
        data = await read_json(request)
        key = idempotency_key(request)
        order_request = validate(PlaceOrder, data)
        outcome = await service.place_order(order_request, key)
        if outcome.kind == "conflict":
            return JSONResponse(outcome.body, status_code=409, media_type=PROBLEM_JSON)
        location = f"/api/orders/{outcome.body['id']}"
        return JSONResponse(
            outcome.body, status_code=outcome.status_code, headers={"Location": location}
        )

    async def find(request: Request) -> Order:
        order_id = path_id(request)
        order = None
        if order_id is not None:
            async with uow() as work:
                order = await work.orders.get(order_id)
        if order is None:
            raise not_found(request, "order")
        return order

    async def get_order(request: Request) -> JSONResponse:
        return JSONResponse(order_view(await find(request)))

    async def history(request: Request) -> JSONResponse:
        order = await find(request)
        return JSONResponse([wire(HistoryEntry, change) for change in order.history])

    return [
        Route("/api/orders", place, methods=["POST"]),
        Route("/api/orders/{id}", get_order, methods=["GET"]),
        Route("/api/orders/{id}/history", history, methods=["GET"]),
    ]

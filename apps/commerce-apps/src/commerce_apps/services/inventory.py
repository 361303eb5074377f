"""Inventory's HTTP API: the product catalogue with stock, reserved and sold counts."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from core_saga.messages import WireModel
from core_saga.ports import InventoryUnitOfWork
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from commerce_apps.http.docs import Operation, list_of
from commerce_apps.http.params import not_found, path_id, wire


class ProductBody(WireModel):
    """A product; ``stock`` is what is still available to reserve."""

    id: UUID
    name: str
    stock: int
    reserved: int
    sold: int


OPERATIONS = (
    Operation("GET", "/api/products", "List products", {200: list_of(ProductBody)}),
    Operation("GET", "/api/products/{id}", "One product", {200: ProductBody, 404: None}),
)


def inventory_routes(uow: Callable[[], InventoryUnitOfWork]) -> list[BaseRoute]:
    async def list_products(request: Request) -> JSONResponse:
        async with uow() as work:
            products = await work.products.list()
        return JSONResponse([wire(ProductBody, p) for p in products])

    async def get_product(request: Request) -> JSONResponse:
        product_id = path_id(request)
        product = None
        if product_id is not None:
            async with uow() as work:
                product = await work.products.get(product_id)
        if product is None:
            raise not_found(request, "product")
        return JSONResponse(wire(ProductBody, product))

    return [
        Route("/api/products", list_products, methods=["GET"]),
        Route("/api/products/{id}", get_product, methods=["GET"]),
    ]

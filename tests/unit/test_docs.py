"""The OpenAPI document and the Swagger UI set-up each service serves."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from commerce_apps.http.docs import Operation, docs_routes, openapi_document
from commerce_apps.services import inventory, notification, order, payment
from openapi_spec_validator import validate
from starlette.applications import Starlette

pytestmark = pytest.mark.unit

SERVICES = {
    "order": order.OPERATIONS,
    "inventory": inventory.OPERATIONS,
    "payment": payment.OPERATIONS,
    "notification": notification.OPERATIONS,
}


def refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].removeprefix("#/components/schemas/")
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


async def get(operations: Sequence[Operation], path: str) -> httpx.Response:
    app = Starlette(routes=docs_routes("order service", "0.1.0", operations))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.example") as client:
        return await client.get(path)


async def test_swagger_ui_sends_the_document_to_no_outside_validator() -> None:
    init = await get(order.OPERATIONS, "/docs/init.js")
    assert init.status_code == 200
    assert "validatorUrl: null" in init.text


def test_the_order_request_schema_keeps_its_validation_rules() -> None:
    document = openapi_document("order service", "0.1.0", order.OPERATIONS)
    body = document["paths"]["/api/orders"]["post"]["requestBody"]
    place_order = resolve(document, body["content"]["application/json"]["schema"])
    line = resolve(document, place_order["properties"]["items"]["items"])
    quantity, unit_price = line["properties"]["quantity"], line["properties"]["unitPrice"]
    assert (quantity["type"], quantity["minimum"], quantity["maximum"]) == ("integer", 1, 10_000)
    assert (unit_price["type"], unit_price["minimum"]) == ("number", 0.01)  # never a string


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_reference_in_the_document_resolves(service: str) -> None:
    document = openapi_document(f"{service} service", "0.1.0", SERVICES[service])
    assert document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_document_is_valid_openapi_3_1(service: str) -> None:
    """Each ``{id}`` of a path was undeclared: the validator refused order's and inventory's
    documents, and Swagger UI's "Try it out" had no field for the id."""
    document = openapi_document(f"{service} service", "0.1.0", SERVICES[service])
    validate(document)

"""Reading ids from requests and writing domain objects back, with problem+json for bad ids."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pydantic import BaseModel
from starlette.requests import Request

from commerce_apps.http.problems import Problem


def path_id(request: Request, name: str = "id") -> UUID | None:
    """The path's UUID, or None when it is not one (the caller answers 404: no such thing)."""
    try:
        return UUID(request.path_params[name])
    except ValueError:
        return None


def query_order_id(request: Request) -> UUID | None:
    raw = request.query_params.get("orderId")
    if raw is None or raw == "":
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise Problem(
            400,
            "Bad Request",
            "orderId is not a UUID",
            [{"field": "orderId", "message": "Input should be a valid UUID"}],
        ) from None


def not_found(request: Request, what: str) -> Problem:
    """404 for the thing the path names (a malformed id names nothing either)."""
    return Problem(404, "Not Found", f"no {what} {request.path_params['id']}")


def wire(model: type[BaseModel], value: object) -> dict[str, Any]:
    """``value`` (a domain dataclass) in the wire form ``model`` describes."""
    return model.model_validate(value, from_attributes=True).model_dump(mode="json", by_alias=True)

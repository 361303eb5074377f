"""Reading ids from paths and query strings, with problem+json answers for bad ones."""

from __future__ import annotations

from uuid import UUID

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

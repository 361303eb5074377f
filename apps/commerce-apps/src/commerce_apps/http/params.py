"""Reading ids and limits from requests, writing domain objects back; problem+json if bad."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from core_saga.ports import LIST_LIMIT
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


MAX_LIST_LIMIT = 1000


def query_limit(request: Request) -> int:
    """``limit`` rows to list: 1..1000, ``LIST_LIMIT`` when absent or empty (as ``orderId``).

    ASCII digits only: ``int`` would also take a sign, spaces, underscores or other scripts.
    Their length is checked first: past 4,300 digits (leading zeros too) ``int`` raises.
    """
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return LIST_LIMIT
    digits = raw.lstrip("0")
    if (
        raw.isascii()
        and raw.isdigit()
        and 0 < len(digits) <= len(str(MAX_LIST_LIMIT))
        and int(digits) <= MAX_LIST_LIMIT
    ):
        return int(digits)
    raise Problem(
        400,
        "Bad Request",
        f"limit is not an integer from 1 to {MAX_LIST_LIMIT}",
        [{"field": "limit", "message": f"Input should be an integer from 1 to {MAX_LIST_LIMIT}"}],
    )


def not_found(request: Request, what: str) -> Problem:
    """404 for the thing the path names (a malformed id names nothing either)."""
    return Problem(404, "Not Found", f"no {what} {request.path_params['id']}")


def wire(model: type[BaseModel], value: object) -> dict[str, Any]:
    """``value`` (a domain dataclass) in the wire form ``model`` describes."""
    return model.model_validate(value, from_attributes=True).model_dump(mode="json", by_alias=True)

"""RFC 9457 problem+json responses, and the handlers that turn errors into them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from core_saga.ports import InfrastructureError
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from commerce_apps.broker_errors import first_line

PROBLEM_JSON = "application/problem+json"

_log = logging.getLogger(__name__)


class Problem(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """One entry per invalid field, named by its JSON path (camelCase, as sent).

    pydantic also reports a tuple with an invalid element as too short (it counts only the
    valid ones): that entry is dropped where an element's own error already explains it.
    """
    items = error.errors(include_url=False)
    inside = {item["loc"][:-n] for item in items for n in range(1, len(item["loc"]))}
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "body",
            "message": item["msg"],
        }
        for item in items
        if not (item["type"] == "too_short" and item["loc"] in inside)
    ]


_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def title_for(status: int) -> str:
    return _TITLES.get(status, "Error")


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc.status, exc.title, exc.detail, exc.errors)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != title_for(exc.status_code) else None
    return problem_response(exc.status_code, title_for(exc.status_code), detail, None, exc.headers)


RETRY_AFTER_SECONDS = 1


async def on_unavailable(request: Request, exc: Exception) -> Response:
    """A database or broker failure a retry can outlive: 503 with ``Retry-After``, not 500.

    After a database restart each pooled connection fails its next use once, so a request
    may meet one; the client retries (a POST with the same Idempotency-Key is safe).
    """
    assert isinstance(exc, InfrastructureError)
    # its first line: not the SQL that follows in a database error's message
    _log.warning("%s %s: %s", request.method, request.url.path, first_line(exc, limit=300))
    return problem_response(
        503,
        title_for(503),
        "a dependency is unavailable; retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def on_unexpected(request: Request, exc: Exception) -> Response:
    return problem_response(500, title_for(500), "an unexpected error occurred; it was logged")


EXCEPTION_HANDLERS = {
    Problem: on_problem,
    HTTPException: on_http_exception,
    InfrastructureError: on_unavailable,
    Exception: on_unexpected,
}

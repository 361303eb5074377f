"""Errors as problem+json: a failing dependency is a 503 to retry, anything else a 500."""

from __future__ import annotations

import logging

import httpx
import pytest
from commerce_apps.http.problems import EXCEPTION_HANDLERS, PROBLEM_JSON
from core_saga.ports import InfrastructureError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def database_down(request: Request) -> Response:
    raise InfrastructureError("order database unreachable: connection refused")


async def statement_failed(request: Request) -> Response:
    raise InfrastructureError(
        "order database failure: (LockNotAvailableError) canceling statement due to lock timeout"
        "\n[SQL: INSERT INTO orders (id, customer_id) VALUES ($1, $2)]"
        "\n[parameters: ('01a2', 'c0ffee00-customer')]"
    )


async def bug(request: Request) -> Response:
    raise KeyError("surprise")


async def get(path: str) -> httpx.Response:
    routes = [
        Route("/down", database_down),
        Route("/statement", statement_failed),
        Route("/bug", bug),
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return await client.get(path)


async def test_an_unavailable_dependency_is_a_503_to_retry() -> None:
    response = await get("/down")

    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "type": "about:blank",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "a dependency is unavailable; retry later",
    }


async def test_anything_else_is_a_500_that_says_nothing_of_its_cause() -> None:
    response = await get("/bug")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert "surprise" not in response.text


async def test_a_503_logs_the_failure_in_one_line_without_the_sql_that_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLAlchemy's message goes on with the statement (and, before ``hide_parameters``, a
    customer's order in its parameters): 3 KB a line in the audit."""
    with caplog.at_level(logging.WARNING, logger="commerce_apps.http.problems"):
        assert (await get("/statement")).status_code == 503
    [line] = [r.getMessage() for r in caplog.records]
    assert line == (
        "GET /statement: order database failure: (LockNotAvailableError) canceling statement"
        " due to lock timeout"
    )

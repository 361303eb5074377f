"""`/health/live`, `/health/ready` and `/metrics`: the routes every service has."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CollectorRegistry, make_asgi_app
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

Check = Callable[[], Awaitable[bool]]
CHECK_SECONDS = 2.0
"""How long a readiness check may take: an orchestrator's probe gives up after a second or
two, and a check waiting on an exhausted pool (up to its 30 s timeout) would hold the
probe's connection and tell nothing. A slower check is DOWN."""


def health_routes(checks: Mapping[str, Check], registry: CollectorRegistry) -> list[BaseRoute]:
    """Readiness runs every named check (database, broker, migrations) at once, each for at
    most ``CHECK_SECONDS``: any False, failing or slower → 503."""

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "UP"})

    async def run(check: Check) -> str:
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                return "UP" if await check() else "DOWN"
        except Exception as exc:  # a failing probe is a DOWN answer, not a 500
            return f"DOWN: {type(exc).__name__}"

    async def ready(request: Request) -> JSONResponse:
        answers = await asyncio.gather(*(run(check) for check in checks.values()))
        results = dict(zip(checks, answers, strict=True))
        up = all(value == "UP" for value in results.values())
        return JSONResponse(
            {"status": "UP" if up else "DOWN", "checks": results}, status_code=200 if up else 503
        )

    return [
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", _Exposition(registry), methods=["GET"]),
    ]


class _Exposition:
    """prometheus-client's own ASGI app: it speaks OpenMetrics to a scraper that asks for it
    and gzips for one that accepts it. A class, so Starlette routes to it as an ASGI app."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._app = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

"""`/health/live`, `/health/ready` and `/metrics`: the routes every service has."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

Check = Callable[[], Awaitable[bool]]


def health_routes(checks: Mapping[str, Check], registry: CollectorRegistry) -> list[BaseRoute]:
    """Readiness runs every named check (database, broker, migrations): any False → 503."""

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "UP"})

    async def ready(request: Request) -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                results[name] = "UP" if await check() else "DOWN"
            except Exception as exc:  # a failing probe is a DOWN answer, not a 500
                results[name] = f"DOWN: {type(exc).__name__}"
        up = all(value == "UP" for value in results.values())
        return JSONResponse(
            {"status": "UP" if up else "DOWN", "checks": results}, status_code=200 if up else 503
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

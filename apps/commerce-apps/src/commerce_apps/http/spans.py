"""The SERVER span of each request: named after its route, never its raw path; none for
scrapes and probes."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.util.http import sanitize_method
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from commerce_apps.http.middleware import route_template


class ServerSpans:
    """OpenTelemetry's ASGI middleware, one SERVER span a request named ``METHOD route``
    with ``http.route`` (the matched route's template, never the raw path: ``GET`` alone
    when no route matches), without its internal ``http send``/``http receive`` spans.

    ``/metrics`` and ``/health/*`` are not traced, nor are the statements a readiness probe
    runs: scrapes and probes come every few seconds and say nothing about orders.
    """

    def __init__(self, app: ASGIApp, provider: TracerProvider, routes: Sequence[BaseRoute]):
        self.app = app
        self.routes = routes
        self.traced = OpenTelemetryMiddleware(
            app,
            tracer_provider=provider,
            default_span_details=self.span_details,
            exclude_spans=["receive", "send"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and untraced(scope["path"]):
            with suppress_instrumentation():
                await self.app(scope, receive, send)
            return
        await self.traced(scope, receive, send)

    def span_details(self, scope: Scope) -> tuple[str, dict[str, str]]:
        method = sanitize_method(str(scope.get("method", "")).strip())
        method = "HTTP" if method == "_OTHER" else method
        route = route_template(self.routes, scope)
        if route is None:
            return method, {}
        return f"{method} {route}", {HTTP_ROUTE: route}


def untraced(path: str) -> bool:
    """Prometheus scrapes and health probes."""
    return path in ("/metrics", "/health") or path.startswith(("/metrics/", "/health/"))

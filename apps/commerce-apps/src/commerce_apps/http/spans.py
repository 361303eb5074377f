"""The SERVER span of each request: named after its route, never its raw path; none for
scrapes and probes."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.util.http import sanitize_method
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send


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
        route = self.route(scope)
        if route is None:
            return method, {}
        return f"{method} {route}", {HTTP_ROUTE: route}

    def route(self, scope: Scope) -> str | None:
        """The template of the route Starlette's router will pick (a full match, else the
        first partial one: a wrong method, answered 405)."""
        partial = None
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return _template(route)
            if match is Match.PARTIAL and partial is None:
                partial = route
        return None if partial is None else _template(partial)


def _template(route: BaseRoute) -> str | None:
    template = getattr(route, "path_format", None)
    return template if isinstance(template, str) else None


def untraced(path: str) -> bool:
    """Prometheus scrapes and health probes."""
    return path in ("/metrics", "/health") or path.startswith(("/metrics/", "/health/"))

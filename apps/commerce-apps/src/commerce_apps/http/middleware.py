"""ASGI middleware that times every request into the service's latency histogram, labelled
by route template."""

from __future__ import annotations

import time
from collections.abc import Sequence

from opentelemetry.util.http import sanitize_method
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from commerce_apps.metrics import ServiceMetrics


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str | None:
    """The template (``/api/orders/{id}``) of the route Starlette's router picks for
    ``scope``: a full match, else the first partial one (a wrong method, answered 405).
    The metrics label and the server span are named after it, never after the raw path."""
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            partial = route
            break
        if match is Match.PARTIAL and partial is None:
            partial = route
    template = getattr(partial, "path_format", None)
    return template if isinstance(template, str) else None


class RequestMetrics:
    """Labels by route template (``/api/orders/{id}``), never by raw path, to bound cardinality."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: list[BaseRoute]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    def _template(self, scope: Scope) -> str:
        return route_template(self.routes, scope) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            self.metrics.http_duration.labels(
                method=sanitize_method(scope["method"]),  # a bounded label: others are _OTHER
                route=self._template(scope),
                status=str(status),
            ).observe(time.perf_counter() - started)

"""The load generator's HTTP client: an ``aiohttp`` session with as many connections as callers.

Why aiohttp: on the 2-core machine the generator shares the cores with the platform it
measures, so every millisecond it spends is taken from the services. A request cost the
generator 1.2 to 1.3 ms of CPU with ``httpx`` and 0.2 ms with aiohttp (2,000 GETs of
``/health/live``, 16 in flight), whose HTTP parser is in C.
"""

from __future__ import annotations

from typing import Any

import aiohttp

KEEPALIVE_EXPIRY = 4.0  # below uvicorn's 5 s keep-alive: never reuse a closing connection
TransportError = aiohttp.ClientConnectionError  # the connection failed or dropped
RequestError = aiohttp.ClientError  # any failure to ask: also a URL aiohttp will not fetch


class BenchClient:
    """At most ``size`` requests (and connections) in flight to ``base_url``."""

    def __init__(self, base_url: str, size: int, timeout: float) -> None:
        connector = aiohttp.TCPConnector(limit=size, keepalive_timeout=KEEPALIVE_EXPIRY)
        self._session = aiohttp.ClientSession(
            base_url,
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=timeout),
            skip_auto_headers=("User-Agent",),
        )

    async def post(self, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        """Status and JSON body; raises ``TimeoutError`` or ``TransportError``."""
        async with self._session.post(path, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self._session.get(path) as response:
            return response.status, await response.json(content_type=None)

    async def aclose(self) -> None:
        await self._session.close()

"""HTTP clients for the load generator: a pool of one-connection ``httpx.AsyncClient``s.

Why not one client with N connections: httpcore scans every pooled connection (a
``getpeername`` and a ``poll`` system call each) on every request, so one 64-connection
client spends more CPU choosing a connection than sending. A client per connection makes
that scan O(1); the pool hands each request a free client, so at most ``size`` requests
(and connections) are in flight: the limits are sized to the concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

KEEPALIVE_EXPIRY = 4.0  # below uvicorn's 5 s keep-alive: never reuse a closing connection


class ClientPool:
    """``size`` one-connection clients on ``base_url``; ``async with pool.client()``."""

    def __init__(self, base_url: str, size: int, timeout: float) -> None:
        limits = httpx.Limits(
            max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_EXPIRY
        )
        tls = httpx.create_ssl_context()  # loading the CA bundle once, not per client
        self._clients = [
            httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout, verify=tls)
            for _ in range(size)
        ]
        self._free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            self._free.put_nowait(client)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        client = await self._free.get()
        try:
            yield client
        finally:
            self._free.put_nowait(client)

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients))

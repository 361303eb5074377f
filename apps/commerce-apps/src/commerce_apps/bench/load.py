"""The order load generator: POST orders closed-loop or at a rate, and time each to its end.

Closed loop (``concurrency``): that many workers each place an order and wait until it is
CONFIRMED or CANCELLED before placing the next, so ``concurrency`` sagas are in flight.
Open loop (``rate``): orders are placed on a fixed schedule whatever the platform's pace.

The end of an order is seen one of two ways. With ``kafka`` (the broker's address) an
``EventWatcher`` reads the order's OrderConfirmed or OrderCancelled from ``order-events``;
after the run every order is read once over HTTP, and one whose status differs from its
event counts as an error. Without it one poller owns every order still pending: each round
it GETs all of them (at most ``poll_parallel`` at a time), resolves those that turned
terminal with the time their response arrived, then sleeps ``poll_interval``; the terminal
time is late by at most one round plus the interval, and the GETs load the order service.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from adapters_kafka.settings import KafkaSettings

from commerce_apps.bench.clients import BenchClient, RequestError, TransportError
from commerce_apps.bench.report import Completion, LoadResult
from commerce_apps.bench.watch import EventWatcher
from commerce_apps.broker_errors import first_line

TERMINAL = frozenset({"CONFIRMED", "CANCELLED"})
CLOCK_SLACK = 0.002  # seconds an order's createdAt may lie outside its POST: clocks agree
PRICES = {  # the five seeded products (ids: the digit repeated in UUID form)
    "11111111-1111-1111-1111-111111111111": 29.99,
    "22222222-2222-2222-2222-222222222222": 89.00,
    "33333333-3333-3333-3333-333333333333": 39.50,
    "44444444-4444-4444-4444-444444444444": 249.00,
    "55555555-5555-5555-5555-555555555555": 45.00,
}
Progress = Callable[[str], None]  # called with "posted" or "terminal"
POST_ATTEMPTS = 3


@dataclass(frozen=True)
class LoadConfig:
    order_url: str
    orders: int = 3000
    concurrency: int = 64
    rate: float | None = None  # orders per second: open loop instead of closed
    poll_interval: float = 0.005
    poll_parallel: int = 32
    timeout: float = 60.0  # per order, POST to terminal
    seed: int | None = None
    kafka: KafkaSettings | None = None  # the broker: watch order-events instead of polling


def order_body(rng: random.Random) -> dict[str, Any]:
    """One to three distinct seeded products, one or two of each."""
    products = rng.sample(sorted(PRICES), rng.randint(1, 3))
    return {
        "customerId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "items": [
            {"productId": p, "quantity": rng.randint(1, 2), "unitPrice": PRICES[p]}
            for p in products
        ],
        "currency": "EUR",
    }


def _seconds(instant: str) -> float:
    """An API timestamp (``2026-12-01T08:00:00.123456Z``) as seconds since the epoch."""
    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()


async def check_reachable(order_url: str) -> None:
    """Raise ``OSError`` naming the URL unless the order service answers ``/health/live``.

    Any failure to ask is that one error: aiohttp's own for a URL it will not fetch (another
    scheme) is no ``ValueError``, and escaped as a traceback.
    """
    try:
        status = await _live_status(order_url)
    except (TimeoutError, RequestError, ValueError) as exc:
        raise OSError(f"no order service answers at {order_url}: {first_line(exc)}") from None
    if status != 200:
        raise OSError(f"no order service answers at {order_url}: HTTP {status}")


async def _live_status(order_url: str) -> int:
    client = BenchClient(order_url, 1, 5)  # raises ValueError for a URL it cannot be based on
    try:
        status, _ = await client.get("/health/live")
    finally:
        await client.aclose()
    return status


class Poller:
    """Polls every pending order each round; resolves each with (observed time, status)."""

    verifies = False  # what it saw is what the API said

    def __init__(self, client: BenchClient, config: LoadConfig) -> None:
        self._client = client
        self._config = config
        self.start = 0.0  # perf_counter() when the run started: times are relative to it
        self._pending: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self._wake = asyncio.Event()
        self.requests = 0

    def watch(self, order_id: str) -> asyncio.Future[tuple[float, str]]:
        future = asyncio.get_running_loop().create_future()
        self._pending[order_id] = future
        self._wake.set()
        return future

    def forget(self, order_id: str) -> None:
        self._pending.pop(order_id, None)

    async def open(self) -> None:
        """Nothing to connect: the GETs use the run's client."""

    async def close(self) -> None:
        """Nothing to release."""

    async def run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.gather(*(self._check(order_id) for order_id in list(self._pending)))
            await asyncio.sleep(self._config.poll_interval)

    async def _check(self, order_id: str) -> None:
        self.requests += 1
        try:
            code, body = await self._client.get(f"/api/orders/{order_id}")
        except (TimeoutError, TransportError, ValueError):
            return  # tried again next round; the order's own timeout bounds it
        observed = time.perf_counter() - self.start
        if code != 200:
            return
        status = body.get("status")
        future = self._pending.get(order_id)
        if status in TERMINAL and future is not None:
            del self._pending[order_id]
            if not future.done():
                future.set_result((observed, status))


Watcher = Poller | EventWatcher


class LoadRun:
    """One benchmark run; ``run()`` returns the raw results."""

    def __init__(self, config: LoadConfig, progress: Progress = lambda _: None) -> None:
        self.config = config
        self.result = LoadResult(orders=config.orders)
        self._progress = progress
        self._rng = random.Random(config.seed)
        self._start = 0.0
        self._next = 0
        self._ended: dict[str, int] = {}  # order id → its completion's index
        self._wall = 0.0  # time.time() when the run started, beside ``_start``

    async def run(self) -> LoadResult:
        cfg = self.config
        posts = BenchClient(cfg.order_url, max(cfg.concurrency, 1), cfg.timeout)
        polls = BenchClient(cfg.order_url, cfg.poll_parallel, cfg.timeout)
        watcher: Watcher = Poller(polls, cfg) if cfg.kafka is None else EventWatcher(cfg.kafka)
        self.result.watch = "events" if watcher.verifies else "poll"
        try:
            await watcher.open()
            self._start, self._wall = time.perf_counter(), time.time()
            cpu = time.process_time()
            watcher.start = self._start
            watching = asyncio.create_task(watcher.run(), name="bench-watcher")
            try:
                if cfg.rate is None:
                    workers = (self._worker(posts, watcher) for _ in range(cfg.concurrency))
                    await asyncio.gather(*workers)
                else:
                    await self._open_loop(posts, watcher, cfg.rate)
            finally:
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            self.result.client_cpu = time.process_time() - cpu
            await self._read_back(polls, compare=watcher.verifies)
        finally:
            await watcher.close()
            await asyncio.gather(posts.aclose(), polls.aclose())
        self.result.poll_requests = watcher.requests
        return self.result

    async def _read_back(self, client: BenchClient, compare: bool) -> None:
        """Every order once more over HTTP, after the timing: with ``compare`` its status is
        the one its event reported; and the order service's own times of its creation and
        terminal commit are kept, when its clock agrees with this one (``clock_check``)."""
        stamps: dict[str, tuple[float, float]] = {}  # order id → (created, committed)

        async def read(order_id: str, index: int) -> None:
            try:
                code, body = await client.get(f"/api/orders/{order_id}")
            except (TimeoutError, TransportError, ValueError) as exc:
                return self.result.error(f"verify-{type(exc).__name__}")
            status = self.result.completions[index].status
            if compare and (code != 200 or body.get("status") != status):
                return self.result.error("status-differs-from-event")
            if code == 200 and body.get("updatedAt"):
                created, committed = (_seconds(body[k]) for k in ("createdAt", "updatedAt"))
                stamps[order_id] = (created - self._wall, committed - self._wall)

        await asyncio.gather(*(read(order_id, i) for order_id, i in self._ended.items()))
        self._keep_commit_times(stamps)

    def _keep_commit_times(self, stamps: dict[str, tuple[float, float]]) -> None:
        """The order service's clock is trusted when every order it created lies within its
        POST (sent → answered, ``CLOCK_SLACK`` either side), as on one machine; then each
        completion gets its commit time, else none does."""
        done = self.result.completions
        late = 0.0
        for order_id, (created, _) in stamps.items():
            c = done[self._ended[order_id]]
            answered = c.posted_at if c.answered_at is None else c.answered_at
            late = max(late, c.posted_at - created, created - answered)
        if len(stamps) < len(self._ended) or late > CLOCK_SLACK:
            self.result.clock_check = (
                f"the order service's clock is off by up to {late * 1000:.1f} ms: not used"
                if stamps
                else "no order read back"
            )
            return
        self.result.clock_check = "agrees (every order created within its POST)"
        for order_id, (_, committed) in stamps.items():
            index = self._ended[order_id]
            done[index] = replace(done[index], committed_at=committed)

    async def _worker(self, client: BenchClient, poller: Watcher) -> None:
        while self._next < self.config.orders:
            self._next += 1
            await self._one(client, poller)

    async def _open_loop(self, client: BenchClient, poller: Watcher, rate: float) -> None:
        tasks = []
        for index in range(self.config.orders):
            delay = self._start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(client, poller)))
        await asyncio.gather(*tasks)

    async def _one(self, client: BenchClient, poller: Watcher) -> None:
        body = order_body(self._rng)
        headers = {"Idempotency-Key": f"bench-{uuid.uuid4()}"}
        sent = time.perf_counter() - self._start
        try:
            code, answer = await self._post(client, body, headers)
        except TimeoutError:
            return self._failed("post-timeout")
        except (TransportError, ValueError) as exc:
            return self._failed(type(exc).__name__)
        post_seconds = time.perf_counter() - self._start - sent
        self._progress("posted")
        if code not in (200, 201):
            return self._failed(f"http-{code}")
        self.result.post_seconds.append(post_seconds)
        order_id = str(answer["id"])
        try:
            observed, status = await asyncio.wait_for(
                poller.watch(order_id), self.config.timeout - post_seconds
            )
        except TimeoutError:
            poller.forget(order_id)
            return self._failed("terminal-timeout")
        answered = sent + post_seconds
        self._ended[order_id] = len(self.result.completions)
        self.result.completions.append(Completion(sent, observed, status, answered))
        self._progress("terminal")

    async def _post(
        self, client: BenchClient, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any]:
        """POST; a dropped connection is retried with the same Idempotency-Key (safe)."""
        for attempt in range(POST_ATTEMPTS):
            try:
                return await client.post("/api/orders", body, headers)
            except TimeoutError:
                raise
            except TransportError:
                if attempt + 1 == POST_ATTEMPTS:
                    raise
                self.result.post_retries += 1
        raise AssertionError("unreachable")

    def _failed(self, kind: str) -> None:
        self.result.error(kind)
        self._progress("terminal")

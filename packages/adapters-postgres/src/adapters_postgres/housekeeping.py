"""Purging what is no longer needed: old inbox rows and expired idempotency keys.

An inbox row only has to outlive every redelivery of its event: keep it longer than the
broker keeps messages (and any DLT replay you may still do). An idempotency key is dead
once it expired; the store already ignores it, this only gives the space back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters_postgres.tables import idempotency_keys, processed_events


async def purge_processed_events(engine: AsyncEngine, before: datetime) -> int:
    """Delete inbox rows processed before ``before``; return how many."""
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(processed_events).where(processed_events.c.processed_at < before)
        )
    return int(result.rowcount or 0)


async def purge_expired_keys(engine: AsyncEngine, now: datetime) -> int:
    """Delete idempotency keys (order database) that expired before ``now``."""
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(idempotency_keys).where(idempotency_keys.c.expires_at < now)
        )
    return int(result.rowcount or 0)

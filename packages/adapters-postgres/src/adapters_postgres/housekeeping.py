"""Purging what is no longer needed: old inbox rows, published outbox rows, expired keys.

An inbox row only has to outlive every redelivery of its event: keep it longer than the
broker keeps messages (and any DLT replay you may still do). An idempotency key is dead
once it expired; the store already ignores it, this only gives the space back.

Every replica of a service purges its database at start and on a timer, so a purge after a
long pause may find a week of rows. It deletes them in bounded batches, each statement its
own short transaction, through an index on the age column: no transaction holds many row
locks or a large undo, and replicas purging at the same moment take different rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import Column, Delete, Integer, any_, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters_postgres.engine import transaction
from adapters_postgres.tables import idempotency_keys, processed_events

PURGE_BATCH: Final = 5_000
"""Rows one purge statement deletes at most: a few milliseconds of locks and WAL."""


def delete_oldest(age: Column[Any]) -> Delete:
    """Delete at most ``:batch_size`` rows of ``age``'s table whose ``age`` is before
    ``:before``, oldest first, by primary key; a row another transaction holds is skipped
    (a replica purging the same table takes other rows instead of waiting for them).

    The ``ORDER BY`` makes the index on ``age`` the natural plan (it yields the rows in that
    order, so the scan stops after one batch) rather than a scan of the whole table. The ids
    go to the ``DELETE`` as one array (``= ANY(ARRAY(…))``), found through the primary key:
    with ``IN (…)`` the planner hash-joined them against a scan of the whole table.
    """
    table = age.table
    [key] = table.primary_key.columns
    oldest = table.alias("oldest")
    batch = (
        select(oldest.c[key.key])
        .where(oldest.c[age.key] < bindparam("before", type_=age.type))
        .order_by(oldest.c[age.key])
        .limit(bindparam("batch_size", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return delete(table).where(key == any_(func.array(batch.scalar_subquery())))


async def delete_in_batches(
    bind: AsyncEngine | AsyncConnection,
    statement: Delete,
    before: datetime,
    batch_size: int = PURGE_BATCH,
) -> int:
    """Run ``statement`` (a ``delete_oldest``), each time in a transaction of its own, until
    it deletes fewer than ``batch_size`` rows; return how many it deleted in all.

    ``bind`` is an engine, or a connection in autocommit mode (the relay's).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    params = {"before": before, "batch_size": batch_size}
    deleted = 0
    while True:
        async with transaction(bind) as conn:
            result = await conn.execute(statement, params)
        count = int(result.rowcount or 0)
        deleted += count
        if count < batch_size:
            return deleted


_PURGE_PROCESSED_EVENTS = delete_oldest(processed_events.c.processed_at)
_PURGE_EXPIRED_KEYS = delete_oldest(idempotency_keys.c.expires_at)


async def purge_processed_events(
    engine: AsyncEngine, before: datetime, batch_size: int = PURGE_BATCH
) -> int:
    """Delete inbox rows processed before ``before``, ``batch_size`` per transaction; return
    how many."""
    return await delete_in_batches(engine, _PURGE_PROCESSED_EVENTS, before, batch_size)


async def purge_expired_keys(
    engine: AsyncEngine, now: datetime, batch_size: int = PURGE_BATCH
) -> int:
    """Delete idempotency keys (order database) that expired before ``now``, ``batch_size``
    per transaction; return how many."""
    return await delete_in_batches(engine, _PURGE_EXPIRED_KEYS, now, batch_size)

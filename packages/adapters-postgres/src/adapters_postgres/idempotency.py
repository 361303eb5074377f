"""API idempotency keys: one order per key, however many requests race with it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core_saga.ports import StoredResponse
from sqlalchemy import null, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres.tables import idempotency_keys


class PostgresIdempotencyStore:
    """``IdempotencyStore`` on the order unit of work's connection.

    ``claim`` is one ``INSERT … ON CONFLICT DO UPDATE … WHERE expired``: a new key inserts,
    an expired key is taken over in place, a live key inserts nothing. A concurrent claim of
    the same key waits on the first transaction's row; once that commits (order, outbox row
    and response together) the waiter reads the stored response and replays it, and if it
    rolls back the waiter's insert goes through instead.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(
        self, key: str, request_hash: str, now: datetime, expires_at: datetime
    ) -> StoredResponse | None:
        new = insert(idempotency_keys).values(
            key=key,
            request_hash=request_hash,
            status_code=None,
            response=null(),
            created_at=now,
            expires_at=expires_at,
        )
        claim = new.on_conflict_do_update(
            index_elements=[idempotency_keys.c.key],
            set_={
                "request_hash": new.excluded.request_hash,
                "status_code": None,
                "response": null(),
                "created_at": new.excluded.created_at,
                "expires_at": new.excluded.expires_at,
            },
            where=idempotency_keys.c.expires_at <= now,
        ).returning(idempotency_keys.c.key)
        if (await self._conn.execute(claim)).first() is not None:
            return None
        row = (
            await self._conn.execute(
                select(
                    idempotency_keys.c.request_hash,
                    idempotency_keys.c.status_code,
                    idempotency_keys.c.response,
                ).where(idempotency_keys.c.key == key)
            )
        ).one()
        return StoredResponse(row.request_hash, row.status_code, row.response)

    async def save_response(self, key: str, status_code: int, body: Any) -> None:
        await self._conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == key)
            .values(status_code=status_code, response=body)
        )

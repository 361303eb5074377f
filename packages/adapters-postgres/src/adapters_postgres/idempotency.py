"""API idempotency keys: one order per key, however many requests race with it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core_saga.ports import StoredResponse
from sqlalchemy import JSON, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw
from adapters_postgres.tables import idempotency_keys

# not named "key": an UPDATE would take a parameter named after a column as that column's SET
_KEY = bindparam("idempotency_key", type_=idempotency_keys.c.key.type)

_CLAIM = """
INSERT INTO idempotency_keys AS held
    (key, request_hash, status_code, response, created_at, expires_at)
VALUES ($1, $2, $3, $4::json, $5, $6)
ON CONFLICT (key) DO UPDATE SET
    request_hash = excluded.request_hash,
    status_code = excluded.status_code,
    response = excluded.response,
    created_at = excluded.created_at,
    expires_at = excluded.expires_at
WHERE held.expires_at <= $5
RETURNING key
"""
"""On the driver (``adapters_postgres.raw``): every order placed runs it. The response is
stored as ``json`` text, exactly as ``json.dumps`` wrote it: a replay returns it as is."""

_STATUS_CODE = bindparam("status_code", type_=idempotency_keys.c.status_code.type)
_RESPONSE = bindparam("response", type_=JSON(none_as_null=True))  # no body: SQL NULL

_STORED = select(
    idempotency_keys.c.request_hash,
    idempotency_keys.c.status_code,
    idempotency_keys.c.response,
).where(idempotency_keys.c.key == _KEY)

_SAVE_RESPONSE = (
    update(idempotency_keys)
    .where(idempotency_keys.c.key == _KEY)
    .values(status_code=_STATUS_CODE, response=_RESPONSE)
)


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
        self,
        key: str,
        request_hash: str,
        now: datetime,
        expires_at: datetime,
        response: tuple[int, Any] | None = None,
    ) -> StoredResponse | None:
        status_code, body = response or (None, None)
        stored = None if body is None else json.dumps(body)
        args = (key, request_hash, status_code, stored, now, expires_at)
        if await raw.fetch(self._conn, _CLAIM, *args):
            return None
        row = (await self._conn.execute(_STORED, {"idempotency_key": key})).one()
        return StoredResponse(row.request_hash, row.status_code, row.response)

    async def save_response(self, key: str, status_code: int, body: Any) -> None:
        await self._conn.execute(
            _SAVE_RESPONSE, {"idempotency_key": key, "status_code": status_code, "response": body}
        )

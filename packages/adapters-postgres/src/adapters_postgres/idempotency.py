"""API idempotency keys: one order per key, however many requests race with it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core_saga.ports import KeyClaim, StoredResponse
from sqlalchemy import JSON, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters_postgres import raw
from adapters_postgres.tables import idempotency_keys

# not named "key": an UPDATE would take a parameter named after a column as that column's SET
_KEY = bindparam("idempotency_key", type_=idempotency_keys.c.key.type)

_NOW = bindparam("now", type_=idempotency_keys.c.created_at.type)
_STATUS_CODE = bindparam("status_code", type_=idempotency_keys.c.status_code.type)
_RESPONSE = bindparam("response", type_=JSON(none_as_null=True))  # no body: SQL NULL
_NEW = insert(idempotency_keys).values(
    key=_KEY,
    request_hash=bindparam("request_hash", type_=idempotency_keys.c.request_hash.type),
    status_code=_STATUS_CODE,
    response=_RESPONSE,
    created_at=_NOW,
    expires_at=bindparam("expires_at", type_=idempotency_keys.c.expires_at.type),
)
CLAIM = _NEW.on_conflict_do_update(
    index_elements=[idempotency_keys.c.key],
    set_={
        "request_hash": _NEW.excluded.request_hash,
        "status_code": _NEW.excluded.status_code,
        "response": _NEW.excluded.response,
        "created_at": _NEW.excluded.created_at,
        "expires_at": _NEW.excluded.expires_at,
    },
    where=idempotency_keys.c.expires_at <= _NOW,
).returning(idempotency_keys.c.key)
"""A new or expired key inserted, with its request's hash and response; a live one kept."""
_CLAIM = raw.Compiled(CLAIM)

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


CLAIM_TRIES = 3
"""Claims of one key per POST: each retry follows a key purged right after a lost claim."""


class KeyRaceError(RuntimeError):
    """A key was live at its claim and gone when read, ``CLAIM_TRIES`` times in a row."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was deleted after each of its lost claims")


def claim_params(claim: KeyClaim) -> dict[str, Any]:
    """The parameters of ``CLAIM``."""
    status_code, body = claim.response or (None, None)
    return {
        "idempotency_key": claim.key,
        "request_hash": claim.request_hash,
        "now": claim.now,
        "expires_at": claim.expires_at,
        "status_code": status_code,
        "response": body,
    }


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
        params = claim_params(KeyClaim(key, request_hash, now, expires_at, response))
        if await raw.fetch_compiled(self._conn, _CLAIM, params):
            return None
        stored = await self.stored(key)
        if stored is None:  # in a transaction the lost claim locked the row: the purge skips it
            raise KeyRaceError(key)
        return stored

    async def stored(self, key: str) -> StoredResponse | None:
        """What a live key holds (a claim that lost); None if it was deleted since.

        ``placing`` claims outside a transaction, so the row is not locked when this reads
        it: the key can expire and the housekeeping purge delete it in between (a
        millisecond window). The caller then claims again, and this time the claim inserts.
        """
        row = (await self._conn.execute(_STORED, {"idempotency_key": key})).one_or_none()
        if row is None:
            return None
        return StoredResponse(row.request_hash, row.status_code, row.response)

    async def save_response(self, key: str, status_code: int, body: Any) -> None:
        await self._conn.execute(
            _SAVE_RESPONSE, {"idempotency_key": key, "status_code": status_code, "response": body}
        )

"""Reading ids, limits and cursors from requests, writing rows and pages; problem+json if bad."""

from __future__ import annotations

import hashlib
import re
import struct
from base64 import urlsafe_b64decode, urlsafe_b64encode
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode
from uuid import UUID

from core_saga.ports import LIST_LIMIT, Position
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from commerce_apps.http.problems import Problem


def path_id(request: Request, name: str = "id") -> UUID | None:
    """The path's UUID, or None when it is not one (the caller answers 404: no such thing)."""
    try:
        return UUID(request.path_params[name])
    except ValueError:
        return None


def query_order_id(request: Request) -> UUID | None:
    raw = request.query_params.get("orderId")
    if raw is None or raw == "":
        return None
    try:
        return UUID(raw)
    except ValueError:
        raise Problem(
            400,
            "Bad Request",
            "orderId is not a UUID",
            [{"field": "orderId", "message": "Input should be a valid UUID"}],
        ) from None


MAX_LIST_LIMIT = 1000


def query_limit(request: Request) -> int:
    """``limit`` rows to list: 1..1000, ``LIST_LIMIT`` when absent or empty (as ``orderId``).

    ASCII digits only: ``int`` would also take a sign, spaces, underscores or other scripts.
    Their length is checked first: past 4,300 digits (leading zeros too) ``int`` raises.
    """
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return LIST_LIMIT
    digits = raw.lstrip("0")
    if (
        raw.isascii()
        and raw.isdigit()
        and 0 < len(digits) <= len(str(MAX_LIST_LIMIT))
        and int(digits) <= MAX_LIST_LIMIT
    ):
        return int(digits)
    raise Problem(
        400,
        "Bad Request",
        f"limit is not an integer from 1 to {MAX_LIST_LIMIT}",
        [{"field": "limit", "message": f"Input should be an integer from 1 to {MAX_LIST_LIMIT}"}],
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_POSITION = struct.Struct(">q16s")  # microseconds since the epoch, the id's 16 bytes
_CHECK = 6  # bytes of digest: 24 + 6 = 30 bytes, 40 base64url characters with no padding
_CURSOR = re.compile(r"[A-Za-z0-9_-]{40}")


def _digest(packed: bytes) -> bytes:
    return hashlib.blake2b(packed, digest_size=_CHECK, person=b"list-cursor-v1").digest()


def encode_cursor(position: Position) -> str:
    """``before``'s value for the rows older than ``position`` (a row's created_at and id).

    Opaque, so its layout may change; the digest turns a truncated or edited cursor into a
    400 rather than another page. It is not a signature: a forged cursor only selects rows
    the caller may list anyway.
    """
    created_at, row_id = position
    packed = _POSITION.pack((created_at - _EPOCH) // timedelta(microseconds=1), row_id.bytes)
    return urlsafe_b64encode(packed + _digest(packed)).decode()


def decode_cursor(raw: str) -> Position | None:
    """The position ``encode_cursor`` wrote into ``raw``; None for anything else."""
    if not _CURSOR.fullmatch(raw):
        return None
    decoded = urlsafe_b64decode(raw)
    packed, check = decoded[: _POSITION.size], decoded[_POSITION.size :]
    if check != _digest(packed):
        return None
    micros, id_bytes = _POSITION.unpack(packed)
    try:
        return _EPOCH + timedelta(microseconds=micros), UUID(bytes=id_bytes)
    except OverflowError:
        return None


def query_before(request: Request) -> Position | None:
    """The ``before`` cursor (from a ``Link`` header) as a position; None when absent or empty."""
    raw = request.query_params.get("before")
    if raw is None or raw == "":
        return None
    position = decode_cursor(raw)
    if position is None:
        raise Problem(
            400,
            "Bad Request",
            "before is not a cursor this service gave",
            [{"field": "before", "message": 'Input should be the cursor of a Link rel="next"'}],
        )
    return position


@dataclass(frozen=True)
class ListQuery:
    """A list route's checked query: ``orderId``, ``limit`` and ``before`` (all filters)."""

    order_id: UUID | None
    limit: int
    before: Position | None


def list_query(request: Request) -> ListQuery:
    return ListQuery(query_order_id(request), query_limit(request), query_before(request))


class Listed(Protocol):
    """A listed row: its position is where the next page starts."""

    @property
    def id(self) -> UUID: ...

    @property
    def created_at(self) -> datetime: ...


def list_page(
    request: Request, query: ListQuery, rows: Sequence[Listed], model: type[BaseModel]
) -> JSONResponse:
    """``rows`` (oldest first) as a JSON array, with an RFC 8288 ``Link`` to the older ones
    when the page is full.

    Not with ``orderId``: an order has one payment or notification at most. The link is
    relative, as ``Location`` is, so it holds behind a proxy that rewrites host or scheme.
    """
    headers = {}
    if query.order_id is None and len(rows) == query.limit:
        cursor = encode_cursor((rows[0].created_at, rows[0].id))
        older = urlencode({"limit": query.limit, "before": cursor})
        headers["Link"] = f'<{request.url.path}?{older}>; rel="next"'
    return JSONResponse([wire(model, row) for row in rows], headers=headers)


def not_found(request: Request, what: str) -> Problem:
    """404 for the thing the path names (a malformed id names nothing either)."""
    return Problem(404, "Not Found", f"no {what} {request.path_params['id']}")


def wire(model: type[BaseModel], value: object) -> dict[str, Any]:
    """``value`` (a domain dataclass) in the wire form ``model`` describes."""
    return model.model_validate(value, from_attributes=True).model_dump(mode="json", by_alias=True)

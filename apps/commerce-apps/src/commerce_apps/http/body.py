"""Reading a JSON request body safely: media type, size cap, syntax, then the model."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from commerce_apps.http.problems import Problem, field_errors

MAX_BODY_BYTES: Final = 64 * 1024
M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """415 for another media type, 413 past ``limit`` bytes (read no further), 400 for bad JSON."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":  # a +json type has rules of its own (merge-patch...)
        raise Problem(415, "Unsupported Media Type", "send the body as application/json")
    coding = request.headers.get("content-encoding", "identity").strip().lower()
    if coding != "identity":  # RFC 9110 §15.5.16: 415 for a content coding not supported
        raise Problem(415, "Unsupported Media Type", f"send the body without {coding} coding")
    declared = request.headers.get("content-length", "")
    # Its significant digits counted first, and only they converted: int() refuses over
    # 4,300 digits, leading zeros too (a 500 otherwise).
    digits = declared.lstrip("0")
    if declared.isascii() and declared.isdigit() and (len(digits) > 18 or int(digits or 0) > limit):
        raise Problem(413, "Content Too Large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, "Content Too Large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    try:
        return json.loads(
            b"".join(chunks), parse_float=Decimal, parse_int=_integer, parse_constant=_no_constant
        )
    except ValueError as exc:  # bad JSON or UTF-8
        raise Problem(400, "Bad Request", f"malformed JSON: {exc}") from None
    except RecursionError:  # e.g. 60 000 "[": small enough to read, too deep to parse
        raise Problem(400, "Bad Request", "malformed JSON: nested too deeply") from None


def _integer(text: str) -> int | Decimal:
    """An int; past ``int``'s 4,300 digits a Decimal, so the field's bounds answer (422), not
    a "malformed JSON" that quoted Python's limit."""
    return int(text) if len(text) <= 4000 else Decimal(text)


def _no_constant(name: str) -> Any:
    """Python's json reads NaN and Infinity; JSON (RFC 8259) has neither."""
    raise ValueError(f"{name} is not JSON")


def validate(model: type[M], data: Any) -> M:
    """422 naming every invalid field. Fields by their wire names only: the models also take
    Python's names (``customer_id``), for code, which the API does not document."""
    try:
        return model.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise Problem(
            422, "Unprocessable Content", "the request body is invalid", field_errors(exc)
        ) from None

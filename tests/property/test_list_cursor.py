"""A list cursor gives back the position it was made of; any edit of it gives nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import pytest
from commerce_apps.http.params import decode_cursor, encode_cursor
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.property

instants = st.datetimes(timezones=st.just(UTC))  # years 1 to 9999
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@given(instants, st.uuids())
def test_a_position_round_trips_to_the_microsecond(at: datetime, row_id: UUID) -> None:
    assert decode_cursor(encode_cursor((at, row_id))) == (at, row_id)


@given(instants, st.uuids(), st.data())
def test_a_cursor_with_one_character_changed_is_refused(
    at: datetime, row_id: UUID, data: st.DataObject
) -> None:
    cursor = encode_cursor((at, row_id))
    where = data.draw(st.integers(0, len(cursor) - 1))
    other = data.draw(st.sampled_from(BASE64URL.replace(cursor[where], "")))
    assert decode_cursor(cursor[:where] + other + cursor[where + 1 :]) is None


@given(st.text(max_size=60))
def test_other_text_decodes_to_nothing_without_raising(raw: str) -> None:
    assert decode_cursor(raw) is None

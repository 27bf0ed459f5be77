"""The application list's cursor: whatever a client sends as ``cursor`` is either a position the
registry issued or the ``invalid-cursor`` problem — never another error, never a silently shifted
page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import Problem
from services.registry.applications.service import decode_cursor, encode_cursor
from services.registry.models import Application


def issued(created_at: datetime, ident: uuid.UUID) -> str:
    return encode_cursor(Application(id=ident, created_at=created_at))


@given(st.datetimes(timezones=st.just(UTC)), st.uuids())
def test_an_issued_cursor_reads_back_as_its_position(created_at: datetime, ident: uuid.UUID) -> None:
    assert decode_cursor(issued(created_at, ident)) == (created_at, ident)


@given(st.text(max_size=200))
def test_any_other_text_is_the_invalid_cursor_problem(text: str) -> None:
    # Only a cursor with its checksum decodes: random text never does.
    with pytest.raises(Problem) as raised:
        decode_cursor(text)
    assert (raised.value.status, raised.value.code) == (422, "invalid-cursor")


@given(st.integers(min_value=0, max_value=200), st.characters(codec="ascii"))
def test_an_edited_cursor_is_refused(position: int, replacement: str) -> None:
    cursor = issued(datetime(2026, 11, 27, 9, 30, tzinfo=UTC), uuid.UUID(int=7))
    position %= len(cursor)
    edited = cursor[:position] + replacement + cursor[position + 1 :]
    if edited == cursor:
        return
    with pytest.raises(Problem) as raised:
        decode_cursor(edited)
    assert raised.value.code == "invalid-cursor"

"""The pure parts of the auditors' queries and the anomaly rules: signed cursors refuse any
change, windows are aligned and contain their moment, CSV cells never start a formula, time
ranges are checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.audit.anomalies import recent_windows, window_at
from services.audit.models import AuditRecord
from services.audit.queries import FORMULA_START, Cursors, Order, RecordFilter, aggregate_range, cell, time_range
from services.common.errors import Problem

SHANGHAI = ZoneInfo("Asia/Shanghai")
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC))


def cursor_for(occurred_at: datetime, seq: int, f: RecordFilter, order: Order) -> tuple[Cursors, str]:
    cursors = Cursors("a secret")
    return cursors, cursors.encode(AuditRecord(occurred_at=occurred_at, seq=seq), f.fingerprint(order))


@given(at=moments, seq=st.integers(1, 2**63 - 1))
def test_a_cursor_gives_back_its_position(at: datetime, seq: int) -> None:
    f = RecordFilter(consumer="C")
    cursors, cursor = cursor_for(at, seq, f, Order.ASC)
    assert cursors.decode(cursor, f.fingerprint(Order.ASC)) == (at, seq)


@given(at=moments, position=st.integers(0, 10_000), replacement=st.characters(codec="ascii"))
def test_a_changed_cursor_never_names_another_position(at: datetime, position: int, replacement: str) -> None:
    """Refused — or, when the change does not change the bytes (base64's unused low bits of its
    last character, a character the decoder skips), the very same position."""
    f = RecordFilter(consumer="C")
    cursors, cursor = cursor_for(at, 7, f, Order.DESC)
    position %= len(cursor)
    changed = cursor[:position] + replacement + cursor[position + 1 :]
    try:
        outcome: object = cursors.decode(changed, f.fingerprint(Order.DESC))
    except Problem as problem:
        outcome = problem.code
    assert outcome in ((at, 7), "invalid-cursor")


def test_a_cursor_is_bound_to_its_search_and_its_key() -> None:
    f = RecordFilter(consumer="C")
    cursors, cursor = cursor_for(datetime(2026, 3, 2, tzinfo=UTC), 3, f, Order.DESC)
    for fingerprint in (f.fingerprint(Order.ASC), RecordFilter(consumer="D").fingerprint(Order.DESC)):
        with pytest.raises(Problem):
            cursors.decode(cursor, fingerprint)
    with pytest.raises(Problem):
        Cursors("another secret").decode(cursor, f.fingerprint(Order.DESC))
    for garbage in ("", "=", "é", "A" * 40, "not*base64"):
        with pytest.raises(Problem):
            cursors.decode(garbage, f.fingerprint(Order.DESC))


@given(at=moments, seconds=st.sampled_from([60, 600, 3600, 86400]))
def test_windows_are_aligned_and_contain_their_moment(at: datetime, seconds: int) -> None:
    start, end = window_at(at, seconds)
    assert start <= at < end and end - start == timedelta(seconds=seconds)
    assert int(start.timestamp()) % seconds == 0
    previous, current = recent_windows(at, seconds)
    assert current == (start, end) and previous[1] == start


@given(text=st.text(max_size=20))
def test_no_csv_cell_starts_a_formula(text: str) -> None:
    assert not cell(text).startswith(FORMULA_START)
    assert cell(text).removeprefix("'") == text or cell(text) == text


def test_time_ranges() -> None:
    start, end = time_range(datetime(2026, 3, 2, 8), None, SHANGHAI)  # no offset: the platform's zone
    assert start == datetime(2026, 3, 2, 0, tzinfo=UTC) and end is None
    for bad in [
        (datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        (datetime(1, 1, 1), None),  # before year 1 in UTC
    ]:
        with pytest.raises(Problem) as raised:
            time_range(*bad, SHANGHAI)
        assert raised.value.code == "time-range-invalid"
    now = datetime(2026, 3, 2, tzinfo=UTC)
    assert aggregate_range(None, None, SHANGHAI, now) == (now - timedelta(days=30), now)
    with pytest.raises(Problem):
        aggregate_range(now - timedelta(days=367), now, SHANGHAI)

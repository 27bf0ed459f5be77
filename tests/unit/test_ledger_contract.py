"""The ledger's wire contract (contracts/ledger.py): a window splits into parts that read back to
the same ids; what is not a window is refused; windows align to the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.contracts import ledger
from services.common.contracts.ledger import BadLedger, LedgerWindow, parse, window_starts
from services.common.pb import exchange_pb2

START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
END = START + timedelta(minutes=1)


def test_a_large_window_is_split_into_parts_that_read_back_to_the_same_ids() -> None:
    ids = tuple(f"q-{n:06d}" for n in range(ledger.PART_MAX * 2 + 3))
    messages = list(LedgerWindow(START, END, ids).messages("t"))
    assert len(messages) == 3
    parts = [parse(m.value) for m in messages]
    assert {(p.start, p.end) for p in parts} == {(START, END)}
    assert sorted(i for p in parts for i in p.query_ids) == sorted(ids)
    assert all(len(m.value) < 1_000_000 for m in messages)


def test_an_empty_window_is_still_one_message() -> None:
    (message,) = LedgerWindow(START, END, ()).messages("t")
    assert parse(message.value) == LedgerWindow(START, END, ())


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xff\xff",
        exchange_pb2.ExchangeLedger(window_start_unix_ms=10, window_end_unix_ms=10).SerializeToString(),
        exchange_pb2.ExchangeLedger(window_start_unix_ms=-5, window_end_unix_ms=10).SerializeToString(),
        exchange_pb2.ExchangeLedger(window_start_unix_ms=0, window_end_unix_ms=2 * 86_400_000).SerializeToString(),
        exchange_pb2.ExchangeLedger(window_start_unix_ms=0, window_end_unix_ms=1, query_ids=[""]).SerializeToString(),
        exchange_pb2.ExchangeLedger(
            window_start_unix_ms=0, window_end_unix_ms=1, query_ids=["x" * 41]
        ).SerializeToString(),
    ],
)
def test_what_is_not_a_window_is_refused(value: bytes) -> None:
    with pytest.raises(BadLedger):
        parse(value)


def test_windows_align_to_the_epoch_and_only_whole_ones_are_listed() -> None:
    starts = window_starts(START + timedelta(seconds=30), START + timedelta(minutes=3, seconds=5), timedelta(minutes=1))
    assert starts == [START, START + timedelta(minutes=1), START + timedelta(minutes=2)]
    assert window_starts(START, START + timedelta(seconds=59), timedelta(minutes=1)) == []

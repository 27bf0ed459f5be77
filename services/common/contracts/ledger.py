"""``exchange.ledger`` (proto/exchange.proto ``ExchangeLedger``): which queries the exchange closed
in one time window — their ids only, no personal data — so that the audit service can check that
each has its audit record (completeness, 完整性核对) without reading the exchange's schema.

Both sides use the functions here: the exchange builds the messages (``services/exchange/ledger.py``),
the audit service reads them (``services/audit/completeness.py``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.common.bus import Message
from services.common.pb import exchange_pb2 as pb

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Ids per message: a UUID is 36 characters, so a part stays far below Kafka's 1 MB message limit.
PART_MAX = 10_000
QUERY_ID_MAX = 40  # the audit event's query_id bound (contracts/audit.py TEXT_LIMITS)


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class LedgerWindow:
    """LedgerWindow — 台账窗口: the queries closed in [start, end)."""

    start: datetime
    end: datetime
    query_ids: tuple[str, ...]

    def messages(self, topic: str) -> Iterator[Message]:
        """The window as messages of at most :data:`PART_MAX` ids (one, empty, if none closed:
        the receiver then knows the window was looked at)."""
        ids = sorted(self.query_ids)
        for first in range(0, max(len(ids), 1), PART_MAX):
            ledger = pb.ExchangeLedger(
                window_start_unix_ms=to_ms(self.start),
                window_end_unix_ms=to_ms(self.end),
                query_ids=ids[first : first + PART_MAX],
            )
            yield Message(topic=topic, key=str(ledger.window_start_unix_ms).encode(), value=ledger.SerializeToString())


class BadLedger(ValueError):
    """A ledger message that cannot be read, or names an impossible window."""


def parse(value: bytes, max_window: timedelta = timedelta(days=1)) -> LedgerWindow:
    """The window a ledger message carries; :class:`BadLedger` if it is not one."""
    ledger = pb.ExchangeLedger()
    try:
        ledger.ParseFromString(value)
    except Exception as err:  # DecodeError, or a RuntimeWarning-free garbage error
        raise BadLedger(f"undecodable ledger: {err}") from err
    start_ms, end_ms = ledger.window_start_unix_ms, ledger.window_end_unix_ms
    if not 0 <= start_ms < end_ms or end_ms - start_ms > max_window // timedelta(milliseconds=1):
        raise BadLedger(f"not a window: [{start_ms}, {end_ms}) ms")
    try:
        start, end = from_ms(start_ms), from_ms(end_ms)
    except OverflowError as err:
        raise BadLedger(f"not a time: {end_ms} ms") from err
    ids = tuple(i for i in ledger.query_ids)
    bad = [i for i in ids if not 0 < len(i) <= QUERY_ID_MAX or "\x00" in i]
    if bad:
        raise BadLedger(f"{len(bad)} query ids are not ids")
    return LedgerWindow(start, end, ids)


def window_starts(after: datetime, until: datetime, size: timedelta) -> Sequence[datetime]:
    """The starts of the whole windows of ``size`` (aligned to the epoch) from the one holding
    ``after`` up to those that end by ``until``."""
    step = size // timedelta(milliseconds=1)
    first = to_ms(after) // step * step
    last_end = to_ms(until) // step * step
    return [from_ms(ms) for ms in range(first, last_end, step)]

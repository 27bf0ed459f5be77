"""台账 — the exchange's ledger: each closed window is published with the ids of the queries closed
in it (and only those: no pending query, none of another window, no personal data), through the
outbox; a restarted replica publishes the recent windows again."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import MemoryBus, Message, Subscription
from services.common.contracts.ledger import LedgerWindow, parse
from services.common.db import session_factory
from services.common.outbox import Outbox
from services.exchange.ledger import SETTLE, Ledger
from services.exchange.models import Outbox as OutboxModel
from services.exchange.models import Query, QueryStatus
from tests.factories import credit_code
from tests.integration.helpers import eventually

TOPIC = "tongban.exchange.ledger"
MINUTE = timedelta(minutes=1)


def query(status: QueryStatus, completed_at: datetime | None) -> Query:
    return Query(
        id=uuid.uuid4(),
        client_id="sys-ledger",
        consumer_dept=credit_code("110102"),
        actor="sys-ledger",
        fingerprint="f" * 64,
        resource_code="101010/000001",
        provider_dept=credit_code("110101"),
        grant_id=uuid.uuid4(),
        purpose="ZDSHBZ-SP",
        subject_type="id_card",
        subject_hash="a" * 64,
        fields=["姓名"],
        status=status,
        deadline=datetime.now(UTC),
        completed_at=completed_at,
    )


async def published(bus: MemoryBus, received: list[Message], count: int) -> list[LedgerWindow]:
    await eventually(lambda: len(received) >= count, 10, f"{count} ledger messages")
    return [parse(m.value) for m in received]


async def test_each_closed_window_is_published_with_the_queries_closed_in_it(engine: AsyncEngine) -> None:
    now = datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)
    w1, w2 = datetime(2026, 11, 27, 9, 58, tzinfo=UTC), datetime(2026, 11, 27, 9, 59, tzinfo=UTC)
    closed = [query(QueryStatus.COMPLETED, w1 + timedelta(seconds=5)), query(QueryStatus.TIMEOUT, w1 + MINUTE * 0.99)]
    later = query(QueryStatus.NOT_FOUND, w2 + timedelta(seconds=1))
    pending = query(QueryStatus.PENDING, None)
    unfinished_window = query(QueryStatus.COMPLETED, now - timedelta(seconds=1))  # its window has not ended
    async with session_factory(engine).begin() as session:
        session.add_all([*closed, later, pending, unfinished_window])

    bus = MemoryBus("dlq")
    received: list[Message] = []

    async def keep(batch: Sequence[Message]) -> None:
        received.extend(batch)

    bus.subscribe(Subscription([TOPIC], keep, group="test"))
    await bus.start()
    ledger = Ledger(Outbox(OutboxModel, session_factory(engine), bus), TOPIC, MINUTE)
    ledger.next_start = w1  # as if it had published every window before
    assert await ledger.publish_closed(now) == 2  # 9:58 and 9:59; 10:00 ends after now - SETTLE
    windows = await published(bus, received, 2)
    assert [(w.start, w.end) for w in windows] == [(w1, w2), (w2, w2 + MINUTE)]
    assert sorted(windows[0].query_ids) == sorted(str(q.id) for q in closed)
    assert windows[1].query_ids == (str(later.id),)

    # Nothing new has ended: nothing is published again.
    assert await ledger.publish_closed(now + SETTLE / 2) == 0
    # The next window, once it is over and settled, is published, empty if nothing closed in it.
    assert await ledger.publish_closed(now + MINUTE) == 1
    windows = await published(bus, received, 3)
    assert windows[2].start == w2 + MINUTE and windows[2].query_ids == (str(unfinished_window.id),)

    # A replica that starts again publishes the recent windows again (the audit side keeps the union).
    again = Ledger(Outbox(OutboxModel, session_factory(engine), bus), TOPIC, MINUTE)
    assert await again.publish_closed(now + MINUTE) == 60

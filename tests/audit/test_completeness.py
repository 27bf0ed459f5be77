"""完整性核对 — completeness: the exchange's ledger of closed queries is compared with the audit
records. An event lost in flight shows as a missing record (metric, alert rule) once the grace
period has passed, and clears when it arrives after all; nothing lost, nothing missing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit import completeness
from services.audit.models import LedgerWindow
from services.common.bus import Message, PoisonMessage
from services.common.contracts.audit import AuditAction
from services.common.contracts.ledger import LedgerWindow as Ledger
from services.common.db import create_engine, migrate, session_factory
from services.common.outbox import Outbox
from services.exchange.app import MIGRATIONS as EXCHANGE_MIGRATIONS
from services.exchange.ledger import SETTLE
from services.exchange.ledger import Ledger as ExchangeLedger
from services.exchange.models import Outbox as ExchangeOutbox
from services.exchange.models import Query, QueryStatus
from tests.audit.conftest import Audit
from tests.audit.test_queries import add, event
from tests.factories import credit_code
from tests.integration.helpers import eventually
from tests.stack import create_database, drop_database, infra_env

GRACE = timedelta(minutes=5)


def window_of(start: datetime, *ids: str) -> Ledger:
    return Ledger(start, start + timedelta(minutes=1), ids)


def ledger_messages(audit: Audit, window: Ledger) -> list[Message]:
    return list(window.messages(audit.settings.topic("exchange.ledger")))


async def kept(sessions: async_sessionmaker[AsyncSession], start: datetime) -> LedgerWindow | None:
    async with sessions() as session:
        return await session.get(LedgerWindow, start)


def gauge(audit: Audit) -> float | None:
    value: float | None = audit.app.state.metrics.get_sample_value("tongban_audit_missing_records")
    return value


async def test_an_event_lost_in_flight_is_a_missing_record_until_it_arrives(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    start = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    q1, q2, q3 = (str(uuid.uuid4()) for _ in range(3))
    sent = [event(start + timedelta(seconds=n), query_id=q) for n, q in enumerate((q1, q2, q3))]
    lost = sent.pop(1)  # q2's audit event never reaches the topic
    topic = audit.settings.topic("audit.events")
    await audit.producer.publish_many([Message(topic, e.SerializeToString(), e.event_id.encode()) for e in sent])
    await audit.producer.publish_many(ledger_messages(audit, window_of(start, q1, q2, q3)))
    await eventually(lambda: kept(sessions, start), 30, "the ledger window kept")
    await eventually(lambda: _recorded(audit, q1, q3), 30, "the two events recorded")

    metrics = audit.app.state.completeness
    # Within the grace period the window is not judged: the event may still be on its way.
    end = start + timedelta(minutes=1)
    assert await completeness.check_once(sessions, GRACE, metrics, end + GRACE / 2) == 0
    window = await kept(sessions, start)
    assert window is not None and window.checked_at is None
    # After it, the lost one is missing: the gauge (and so the alert's expression) says so.
    assert await completeness.check_once(sessions, GRACE, metrics, end + GRACE) == 1
    assert gauge(audit) == 1
    window = await kept(sessions, start)
    assert window is not None and window.missing == [q2] and window.reconciled_at is None

    # The event arrives late after all: the next check clears it, and the window is reconciled.
    await audit.producer.publish_many([Message(topic, lost.SerializeToString(), lost.event_id.encode())])
    await eventually(lambda: _recorded(audit, q2), 30, "the late event recorded")
    assert await completeness.check_once(sessions, GRACE, metrics, end + GRACE * 2) == 0
    assert gauge(audit) == 0
    window = await kept(sessions, start)
    assert window is not None and window.missing == [] and window.reconciled_at is not None


async def _recorded(audit: Audit, *query_ids: str) -> bool:
    records = await audit.records(**{"from": "2026-11-27T00:00:00Z", "to": "2026-11-28T00:00:00Z"})
    return set(query_ids) <= {r.get("query_id") for r in records}


async def test_a_window_merges_its_copies_and_only_query_records_count(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    start = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)
    end = start + timedelta(minutes=1)
    done, other = str(uuid.uuid4()), str(uuid.uuid4())
    await add(sessions, [event(start, query_id=done)])
    # A record of another action naming the query is not its query record.
    await add(sessions, [event(start, query_id=other, action=AuditAction.EXCHANGE_EVIDENCE)])
    registry = CollectorRegistry()
    metrics = completeness.CompletenessMetrics(registry)

    async with sessions.begin() as session:
        await completeness.keep_ledger(session, ledger_messages_of(window_of(start, done)))
    assert await completeness.check_once(sessions, GRACE, metrics, end + GRACE) == 0
    window = await kept(sessions, start)
    assert window is not None and window.reconciled_at is not None

    # The same window again, from another replica, with one more id: kept as the union, and
    # checked again.
    async with sessions.begin() as session:
        await completeness.keep_ledger(session, ledger_messages_of(window_of(start, done, other)))
        await completeness.keep_ledger(session, ledger_messages_of(window_of(start, done)))  # adds nothing
    window = await kept(sessions, start)
    assert window is not None and sorted(window.query_ids) == sorted([done, other])
    assert window.reconciled_at is None
    assert await completeness.check_once(sessions, GRACE, metrics, end + GRACE) >= 1
    window = await kept(sessions, start)
    assert window is not None and window.missing == [other]
    assert (registry.get_sample_value("tongban_audit_ledger_windows_open") or 0) >= 1


async def test_a_reconciled_window_is_forgotten_after_the_ledger_topics_retention_an_open_one_never(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    start = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    end = start + timedelta(minutes=1)
    done, lost = str(uuid.uuid4()), str(uuid.uuid4())
    await add(sessions, [event(start, query_id=done)])
    async with sessions.begin() as session:
        await completeness.keep_ledger(session, ledger_messages_of(window_of(start, done)))
        await completeness.keep_ledger(session, ledger_messages_of(window_of(end, lost)))  # never recorded
    metrics = completeness.CompletenessMetrics(CollectorRegistry())
    checked_at = end + timedelta(minutes=1) + GRACE
    assert await completeness.check_once(sessions, GRACE, metrics, checked_at) >= 1
    reconciled = await kept(sessions, start)
    assert reconciled is not None and reconciled.reconciled_at == checked_at

    # One day short of the keep period: both kept; past it: the reconciled one goes.
    await completeness.check_once(sessions, GRACE, metrics, checked_at + completeness.KEEP - timedelta(days=1))
    assert await kept(sessions, start) is not None
    await completeness.check_once(sessions, GRACE, metrics, checked_at + completeness.KEEP + timedelta(seconds=1))
    assert await kept(sessions, start) is None
    still_open = await kept(sessions, end)
    assert still_open is not None and still_open.missing == [lost] and still_open.reconciled_at is None
    await add(sessions, [event(end, query_id=lost)])  # it arrives after all: nothing left missing for other tests
    await completeness.check_once(sessions, GRACE, metrics, checked_at + completeness.KEEP)
    cleared = await kept(sessions, end)
    assert cleared is not None and cleared.reconciled_at is not None


def ledger_messages_of(window: Ledger) -> list[Message]:
    return list(window.messages("tongban.exchange.ledger"))


async def test_an_unreadable_ledger_is_a_poison_message_and_keeps_nothing(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    bad = Message("tongban.exchange.ledger", b"\xff\xff", b"k")
    async with sessions() as session:
        before = len((await session.scalars(select(LedgerWindow))).all())
    with pytest.raises(PoisonMessage) as raised:
        async with sessions.begin() as session:
            await completeness.keep_ledger(session, [bad])
    assert raised.value.message is bad
    async with sessions() as session:
        assert len((await session.scalars(select(LedgerWindow))).all()) == before


async def test_the_exchanges_ledger_over_kafka_reconciles_clean_when_nothing_is_lost(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The exchange's own ledger code, its outbox and the real broker: every closed query has its
    record, so the window is reconciled with nothing missing."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    engine = create_engine(url, pool_size=2)
    try:
        await migrate(engine, "exchange", EXCHANGE_MIGRATIONS)
        start = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
        closed = [exchange_query(start + timedelta(seconds=n)) for n in range(3)]
        async with session_factory(engine).begin() as session:
            session.add_all(closed)
        topic = audit.settings.topic("audit.events")
        sent = [event(q.completed_at, query_id=str(q.id)) for q in closed if q.completed_at is not None]
        await audit.producer.publish_many([Message(topic, e.SerializeToString(), e.event_id.encode()) for e in sent])

        outbox = Outbox(ExchangeOutbox, session_factory(engine), audit.producer)
        ledger = ExchangeLedger(outbox, audit.settings.topic("exchange.ledger"), timedelta(minutes=1))
        ledger.next_start = start
        assert await ledger.publish_closed(start + timedelta(minutes=1) + SETTLE) == 1
        await eventually(lambda: kept(sessions, start), 30, "the exchange's ledger window kept")
        await eventually(lambda: _recorded(audit, *(str(q.id) for q in closed)), 30, "the query records")

        window = await kept(sessions, start)
        assert window is not None and sorted(window.query_ids) == sorted(str(q.id) for q in closed)
        metrics = audit.app.state.completeness
        await completeness.check_once(sessions, GRACE, metrics, start + timedelta(minutes=1) + GRACE)
        window = await kept(sessions, start)
        assert window is not None and window.missing == [] and window.reconciled_at is not None
    finally:
        await engine.dispose()
        await drop_database(url)


def exchange_query(completed_at: datetime) -> Query:
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
        status=QueryStatus.COMPLETED,
        deadline=completed_at,
        completed_at=completed_at,
    )

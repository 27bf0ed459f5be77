"""Anomaly rules against the real PostgreSQL: each rule raises its alert when its threshold is
crossed and not below it, once per window; auditors list and acknowledge alerts over HTTP, and
the metrics follow."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.anomalies import Candidate, evaluate
from services.audit.config import AuditSettings
from services.audit.models import Alert, AlertRule
from services.common.calendar import WorkingCalendar
from tests.audit.conftest import Audit
from tests.audit.test_queries import add, dept, event, is_problem

HOUR = timedelta(hours=1)


def rules_settings(audit: Audit) -> AuditSettings:
    return audit.settings.model_copy(
        update={
            "volume_window_s": 3600,
            "volume_baseline_windows": 3,
            "volume_factor": 5.0,
            "volume_min": 5,
            "work_start_hour": 8,
            "work_end_hour": 18,
            "off_hours_min": 1,
            "denials_window_s": 600,
            "denials_min": 3,
            "spread_window_s": 3600,
            "spread_consumers": 3,
            "rare_share": 0.05,
            "rare_history_days": 30,
            "rare_history_min": 10,
        }
    )


# The platform's calendar, as the service loads it (its shipped years: 2024 to 2026 at least).
CALENDAR_METRICS = CollectorRegistry()
CALENDAR = WorkingCalendar.load(CALENDAR_METRICS, "audit")


async def run_rules(
    sessions: async_sessionmaker[AsyncSession], s: AuditSettings, now: datetime, calendar: WorkingCalendar = CALENDAR
) -> list[Candidate]:
    async with sessions.begin() as session:
        return await evaluate(session, s, calendar, now)


def of(raised: list[Candidate], rule: AlertRule) -> list[Candidate]:
    return [c for c in raised if c.rule is rule]


async def test_volume_far_above_the_consumers_own_baseline(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    window = datetime(2026, 3, 30, 3, 0, tzinfo=UTC)  # Monday 11:00 in Asia/Shanghai: working hours
    surging, steady = dept(), dept()
    history = [
        event(window - k * HOUR + timedelta(minutes=m), consumer_dept=c)
        for k in (1, 2, 3)
        for c, per_window in ((surging, 2), (steady, 6))
        for m in range(per_window)
    ]
    now = [event(window + timedelta(minutes=m), consumer_dept=c) for c in (surging, steady) for m in range(11)]
    await add(sessions, history + now)
    raised = of(await run_rules(sessions, rules_settings(audit), window + timedelta(minutes=30)), AlertRule.VOLUME)
    # surging: 11 > 5 × 2; steady: 11 ≤ 5 × 6.
    assert [(c.consumer_dept, c.observed, c.threshold) for c in raised] == [(surging, 11, 10.0)]
    # The same window evaluated again raises nothing new.
    assert of(await run_rules(sessions, rules_settings(audit), window + timedelta(minutes=50)), AlertRule.VOLUME) == []


async def test_access_outside_working_hours(audit: Audit, sessions: async_sessionmaker[AsyncSession]) -> None:
    s = rules_settings(audit)
    at_work, early, weekend = dept(), dept(), dept()
    monday_10 = datetime(2026, 4, 13, 2, 0, tzinfo=UTC)  # 10:00 local
    monday_0730 = datetime(2026, 4, 13, 23, 30, tzinfo=UTC) - timedelta(days=1)  # 07:30 local on Monday
    saturday_11 = datetime(2026, 4, 18, 3, 0, tzinfo=UTC)
    await add(
        sessions,
        [
            event(monday_10, consumer_dept=at_work),
            event(monday_0730, consumer_dept=early),
            event(saturday_11, consumer_dept=weekend),
        ],
    )
    found = []
    for moment in (monday_10, monday_0730, saturday_11):
        found += of(await run_rules(sessions, s, moment + timedelta(minutes=1)), AlertRule.OFF_HOURS)
    assert sorted(c.consumer_dept for c in found) == sorted([early, weekend])


async def test_working_days_are_those_of_the_platforms_calendar(
    audit: Audit, sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    """A public holiday on a weekday is a day off; a 调休 Saturday is a working day, off only outside
    working hours (国务院办公厅关于2026年部分节假日安排的通知: 国庆节 10-01..10-07, 10-10 worked)."""
    s = rules_settings(audit)
    holiday, makeup, makeup_late = dept(), dept(), dept()
    holiday_monday_10 = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)  # 10:00 local, 国庆节
    makeup_saturday_10 = datetime(2026, 10, 10, 2, 0, tzinfo=UTC)  # 10:00 local, 调休上班
    makeup_saturday_19 = datetime(2026, 10, 10, 11, 0, tzinfo=UTC)  # 19:00 local, after work
    await add(
        sessions,
        [
            event(holiday_monday_10, consumer_dept=holiday),
            event(makeup_saturday_10, consumer_dept=makeup),
            event(makeup_saturday_19, consumer_dept=makeup_late),
        ],
    )
    found = []
    for moment in (holiday_monday_10, makeup_saturday_10, makeup_saturday_19):
        found += of(await run_rules(sessions, s, moment + timedelta(minutes=1)), AlertRule.OFF_HOURS)
    assert sorted(c.consumer_dept for c in found) == sorted([holiday, makeup_late])
    assert not CALENDAR_METRICS.get_sample_value("tongban_audit_calendar_fallback_total", {"year": "2026"})

    # Without data for the year: weekends only, as the registry counts, with its warning and metric.
    registry = CollectorRegistry()
    bare = WorkingCalendar({}, registry, "audit")
    elsewhere = dept()
    at = holiday_monday_10 + timedelta(minutes=30)
    await add(sessions, [event(at, consumer_dept=elsewhere)])
    with caplog.at_level(logging.WARNING, logger="tongban.calendar"):
        raised = of(await run_rules(sessions, s, at + timedelta(minutes=1), bare), AlertRule.OFF_HOURS)
    assert elsewhere not in {c.consumer_dept for c in raised}  # a Monday, then: working
    assert registry.get_sample_value("tongban_audit_calendar_fallback_total", {"year": "2026"}) == 2  # 2 windows
    assert any("no holiday calendar for 2026" in r.getMessage() for r in caplog.records)


async def test_repeated_denials_and_one_subject_read_by_many(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    s = rules_settings(audit)
    at = datetime(2026, 4, 20, 3, 0, tzinfo=UTC)
    denied = {"outcome": "denied", "reason": "no-grant"}
    spread, single = "a" * 64, "b" * 64
    a, b, c = dept(), dept(), dept()
    await add(
        sessions,
        [event(at + timedelta(seconds=i), actor="client-x", consumer_dept=a, **denied) for i in range(3)]
        + [event(at + timedelta(seconds=i), actor="client-y", consumer_dept=b, **denied) for i in range(2)]
        + [event(at, consumer_dept=d, subject_hash=spread, subject_type="id_card") for d in (a, b, c)]
        + [event(at, consumer_dept=d, subject_hash=single, subject_type="id_card") for d in (a, b, a)],
    )
    raised = await run_rules(sessions, s, at + timedelta(minutes=2))
    assert [(c.actor, c.observed) for c in of(raised, AlertRule.DENIALS)] == [("client-x", 3)]
    assert [(c.subject_hash, c.observed) for c in of(raised, AlertRule.SUBJECT_SPREAD)] == [(spread, 3)]


async def test_a_purpose_the_consumer_rarely_uses(audit: Audit, sessions: async_sessionmaker[AsyncSession]) -> None:
    s = rules_settings(audit)
    at = datetime(2026, 5, 4, 3, 0, tzinfo=UTC)
    consumer, newcomer = dept(), dept()
    await add(
        sessions,
        [event(at - timedelta(days=d), consumer_dept=consumer, purpose="USUAL") for d in range(1, 21)]
        + [event(at - timedelta(days=3), consumer_dept=newcomer, purpose="USUAL")]  # too little history
        + [
            event(at, consumer_dept=consumer, purpose="USUAL"),
            event(at, consumer_dept=consumer, purpose="ODD-SP"),
            event(at, consumer_dept=newcomer, purpose="ODD-SP"),
        ],
    )
    raised = of(await run_rules(sessions, s, at + timedelta(minutes=5)), AlertRule.RARE_PURPOSE)
    assert [(c.consumer_dept, c.purpose) for c in raised] == [(consumer, "ODD-SP")]


async def test_auditors_list_and_acknowledge_alerts(audit: Audit, sessions: async_sessionmaker[AsyncSession]) -> None:
    s = rules_settings(audit)
    at = datetime(2026, 5, 16, 3, 0, tzinfo=UTC)  # a Saturday (not a 调休 one)
    consumer = dept()
    await add(sessions, [event(at, consumer_dept=consumer)])
    assert len(of(await run_rules(sessions, s, at), AlertRule.OFF_HOURS)) == 1
    async with sessions() as session:
        alert_id = (await session.scalars(select(Alert.id).where(Alert.consumer_dept == consumer))).one()
        await audit.app.state.alert_metrics.refresh(session)
    gauge = audit.app.state.metrics.get_sample_value
    open_before = gauge("tongban_audit_alerts_open", {"rule": "off_hours"})
    assert open_before is not None and open_before >= 1

    listed = await audit.client.get(
        "/v1/audit/alerts", params={"rule": "off_hours", "acknowledged": "false"}, headers=audit.auditor
    )
    assert listed.status_code == 200, listed.text
    mine = [a for a in listed.json()["items"] if a["id"] == alert_id]
    assert mine and mine[0]["consumer_dept"] == consumer and mine[0]["acknowledged_at"] is None

    async def stored() -> tuple[datetime | None, str | None]:
        async with sessions() as session:
            alert = await session.get(Alert, alert_id)
            assert alert is not None
            return alert.acknowledged_at, alert.acknowledged_by

    # Refused: not an auditor, an unknown alert, a malformed id — nothing changes.
    for path, headers, status, code in [
        (f"/v1/audit/alerts/{alert_id}/ack", audit.token(["data_admin"], dept=consumer), 403, "forbidden"),
        (f"/v1/audit/alerts/{alert_id}/ack", audit.token(["consumer"], kind="system"), 403, "forbidden"),
        ("/v1/audit/alerts/999999999/ack", audit.auditor, 404, "unknown-alert"),
        ("/v1/audit/alerts/0/ack", audit.auditor, 422, "validation"),
        (f"/v1/audit/alerts/{2**63}/ack", audit.auditor, 422, "validation"),
    ]:
        is_problem(await audit.client.post(path, headers=headers), status, code)
    assert await stored() == (None, None)

    auditor = audit.token(["auditor"])
    acked = await audit.client.post(f"/v1/audit/alerts/{alert_id}/ack", headers=auditor)
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged_at"] is not None
    when, by = await stored()
    assert when is not None and by == acked.json()["acknowledged_by"] and by.startswith("someone-")
    assert gauge("tongban_audit_alerts_open", {"rule": "off_hours"}) == open_before - 1
    is_problem(await audit.client.post(f"/v1/audit/alerts/{alert_id}/ack", headers=audit.auditor), 409,
               "alert-already-acknowledged")  # fmt: skip
    assert await stored() == (when, by)

    # The acknowledgement is itself in the trail (committed with it in the outbox, appended in a
    # batch from audit.events a moment later), once.
    [record] = await audit.recorded(by)
    assert record.action == "audit.alert.acknowledged"
    records = await audit.records(type="audit.alert.acknowledged")
    assert [r["actor"] for r in records if r["actor"] == by] == [by]

"""Anomaly rules (异常规则) over the audit trail, their alerts (告警) and metrics.

The rules run periodically in a task the lifespan owns (:func:`watch`), not at ingest: ingest is
the chain's hot path (one append per batch, ≥ 20,000 events/s), while the rules compare windows
with baselines of days and weeks, which are cheap to ask PostgreSQL once a minute and costly to
keep per event. A late event still counts: each run looks at the current window and the one
before, and an alert is raised once per rule, key and window (``Alert.dedupe_key``).

Windows are aligned to the epoch (an hour window is a clock hour in UTC, and so in Asia/Shanghai),
so that every run — and every replica — names the same window the same way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import ColumnElement, Date, and_, cast, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.config import AuditSettings
from services.audit.models import Alert, AlertRule, AuditRecord
from services.audit.problems import AuditProblem
from services.common.calendar import WorkingCalendar
from services.common.contracts.audit import AuditAction
from services.common.pagination import one_more, page

log = logging.getLogger("tongban.audit.anomalies")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DENIED = "denied"


class AlertMetrics:
    """``tongban_audit_alerts_raised_total`` and ``tongban_audit_alerts_open`` per rule (every rule
    is shown from the start, at 0, so that an alert on them has a series to watch)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.raised = Counter(
            "tongban_audit_alerts_raised_total", "Anomaly alerts raised, per rule", ["rule"], registry=registry
        )
        self.open = Gauge(
            "tongban_audit_alerts_open", "Anomaly alerts not yet acknowledged, per rule", ["rule"], registry=registry
        )
        for rule in AlertRule:
            self.raised.labels(rule.value)
            self.open.labels(rule.value).set(0)

    async def refresh(self, session: AsyncSession) -> None:
        counts = dict(
            (
                await session.execute(
                    select(Alert.rule, func.count()).where(Alert.acknowledged_at.is_(None)).group_by(Alert.rule)
                )
            ).all()
        )
        for rule in AlertRule:
            self.open.labels(rule.value).set(int(counts.get(rule.value, 0)))


@dataclass(frozen=True, slots=True)
class Candidate:
    """An alert a rule found; stored unless the same rule, key and window already raised one."""

    rule: AlertRule
    window_start: datetime
    window_end: datetime
    observed: float
    threshold: float
    detail: str
    consumer_dept: str = ""
    actor: str = ""
    purpose: str = ""
    subject_hash: str = ""

    @property
    def dedupe_key(self) -> str:
        key = [self.rule.value, self.consumer_dept, self.actor, self.purpose, self.subject_hash]
        return hashlib.sha256("\x1f".join([*key, self.window_start.isoformat()]).encode()).hexdigest()


def window_at(moment: datetime, seconds: int) -> tuple[datetime, datetime]:
    """The epoch-aligned window of ``seconds`` that contains ``moment``."""
    elapsed = (moment - EPOCH) // timedelta(seconds=seconds)
    start = EPOCH + timedelta(seconds=elapsed * seconds)
    return start, start + timedelta(seconds=seconds)


def recent_windows(now: datetime, seconds: int) -> list[tuple[datetime, datetime]]:
    """The window before ``now``'s and ``now``'s own: late events of the previous one still count."""
    current = window_at(now, seconds)
    return [(current[0] - timedelta(seconds=seconds), current[0]), current]


def queries_between(start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(
        AuditRecord.action == AuditAction.EXCHANGE_QUERY,
        AuditRecord.occurred_at >= start,
        AuditRecord.occurred_at < end,
    )


async def volume(session: AsyncSession, s: AuditSettings, start: datetime, end: datetime) -> list[Candidate]:
    """访问量突增: a consumer's queries in the window above ``volume_factor`` × its mean per window
    over the ``volume_baseline_windows`` before (and at least ``volume_min``)."""
    current = dict(
        (
            await session.execute(
                select(AuditRecord.consumer_dept, func.count())
                .where(queries_between(start, end))
                .group_by(AuditRecord.consumer_dept)
                .having(func.count() >= s.volume_min)
            )
        ).all()
    )
    if not current:
        return []
    history_start = start - (end - start) * s.volume_baseline_windows
    baseline = dict(
        (
            await session.execute(
                select(AuditRecord.consumer_dept, func.count())
                .where(queries_between(history_start, start), AuditRecord.consumer_dept.in_(list(current)))
                .group_by(AuditRecord.consumer_dept)
            )
        ).all()
    )
    found = []
    for dept, count in current.items():
        mean = baseline.get(dept, 0) / s.volume_baseline_windows
        threshold = max(float(s.volume_min), s.volume_factor * mean)
        if count > threshold or (mean == 0 and count >= s.volume_min):
            found.append(
                Candidate(
                    AlertRule.VOLUME,
                    start,
                    end,
                    count,
                    threshold,
                    f"{count} queries in the window; baseline {mean:.1f} per window",
                    consumer_dept=dept,
                )
            )
    return found


def local_days(start: datetime, end: datetime, zone: ZoneInfo) -> list[date]:
    """The dates, in ``zone``, that the window [start, end) touches."""
    first, last = start.astimezone(zone).date(), (end - timedelta(microseconds=1)).astimezone(zone).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def off_hours(
    session: AsyncSession, s: AuditSettings, start: datetime, end: datetime, calendar: WorkingCalendar
) -> list[Candidate]:
    """非工作时间访问: queries outside ``work_start_hour``–``work_end_hour`` of a working day
    (工作日) on the platform's calendar, in the platform's zone: weekends and public holidays
    (放假) are days off, a 调休 make-up weekend working day is worked. A year the calendar has no
    data for counts weekends only, and says so (services/common/calendar.py)."""
    local = func.timezone(s.timezone, AuditRecord.occurred_at)
    working = sorted(calendar.working_days_among(local_days(start, end, s.zone)))
    outside = or_(
        cast(local, Date).not_in(working),  # none working in the window: every query is outside
        func.extract("hour", local) < s.work_start_hour,
        func.extract("hour", local) >= s.work_end_hour,
    )
    rows = await session.execute(
        select(AuditRecord.consumer_dept, func.count())
        .where(queries_between(start, end), outside)
        .group_by(AuditRecord.consumer_dept)
        .having(func.count() >= s.off_hours_min)
    )
    return [
        Candidate(
            AlertRule.OFF_HOURS,
            start,
            end,
            count,
            s.off_hours_min,
            f"{count} queries outside working hours",
            consumer_dept=dept,
        )
        for dept, count in rows
    ]


async def denials(session: AsyncSession, s: AuditSettings, start: datetime, end: datetime) -> list[Candidate]:
    """多次被拒: one actor (a system or a person) denied ``denials_min`` times in the window, by
    any service (queries, tokens, sign-ins)."""
    rows = await session.execute(
        select(AuditRecord.actor, func.max(AuditRecord.consumer_dept), func.count())
        .where(AuditRecord.outcome == DENIED, AuditRecord.occurred_at >= start, AuditRecord.occurred_at < end)
        .group_by(AuditRecord.actor)
        .having(func.count() >= s.denials_min)
    )
    return [
        Candidate(
            AlertRule.DENIALS,
            start,
            end,
            count,
            s.denials_min,
            f"{count} denials in the window",
            consumer_dept=dept,
            actor=actor,
        )
        for actor, dept, count in rows
    ]


async def subject_spread(session: AsyncSession, s: AuditSettings, start: datetime, end: datetime) -> list[Candidate]:
    """同一主体被多部门查询: one subject (by its keyed hash) read by ``spread_consumers`` or more
    consuming departments in the window."""
    departments = func.count(AuditRecord.consumer_dept.distinct())
    rows = await session.execute(
        select(AuditRecord.subject_hash, departments)
        .where(queries_between(start, end), AuditRecord.subject_hash != "")
        .group_by(AuditRecord.subject_hash)
        .having(departments >= s.spread_consumers)
    )
    return [
        Candidate(
            AlertRule.SUBJECT_SPREAD,
            start,
            end,
            count,
            s.spread_consumers,
            f"one subject read by {count} departments in the window",
            subject_hash=subject,
        )
        for subject, count in rows
    ]


async def rare_purpose(session: AsyncSession, s: AuditSettings, start: datetime, end: datetime) -> list[Candidate]:
    """罕用事项: a consumer querying for a purpose that was under ``rare_share`` of its queries in
    the ``rare_history_days`` before the window (a consumer with a shorter history has no baseline)."""
    current = (
        await session.execute(
            select(AuditRecord.consumer_dept, AuditRecord.purpose, func.count())
            .where(queries_between(start, end))
            .group_by(AuditRecord.consumer_dept, AuditRecord.purpose)
        )
    ).all()
    if not current:
        return []
    history = (
        await session.execute(
            select(AuditRecord.consumer_dept, AuditRecord.purpose, func.count())
            .where(
                queries_between(start - timedelta(days=s.rare_history_days), start),
                AuditRecord.consumer_dept.in_({dept for dept, _, _ in current}),
            )
            .group_by(AuditRecord.consumer_dept, AuditRecord.purpose)
        )
    ).all()
    totals: dict[str, int] = {}
    used: dict[tuple[str, str], int] = {}
    for dept, purpose, count in history:
        totals[dept] = totals.get(dept, 0) + count
        used[(dept, purpose)] = count
    found = []
    for dept, purpose, count in current:
        total = totals.get(dept, 0)
        if total < s.rare_history_min:
            continue
        share = used.get((dept, purpose), 0) / total
        if share < s.rare_share:
            found.append(
                Candidate(
                    AlertRule.RARE_PURPOSE,
                    start,
                    end,
                    count,
                    s.rare_share,
                    f"purpose was {share:.2%} of {total} queries in {s.rare_history_days} days; {count} now",
                    consumer_dept=dept,
                    purpose=purpose,
                )
            )
    return found


async def evaluate(
    session: AsyncSession, s: AuditSettings, calendar: WorkingCalendar, now: datetime | None = None
) -> list[Candidate]:
    """Run every rule over its recent windows; store the alerts not raised before and return them."""
    now = now or datetime.now(UTC)
    found: list[Candidate] = []
    for rule, seconds in (
        (volume, s.volume_window_s),
        (partial(off_hours, calendar=calendar), s.volume_window_s),
        (denials, s.denials_window_s),
        (subject_spread, s.spread_window_s),
        (rare_purpose, s.volume_window_s),
    ):
        for start, end in recent_windows(now, seconds):
            found += await rule(session, s, start, end)
    if not found:
        return []
    by_key = {c.dedupe_key: c for c in found}
    rows = [{**asdict(c), "rule": c.rule.value, "dedupe_key": key} for key, c in by_key.items()]
    inserted = await session.execute(
        insert(Alert).values(rows).on_conflict_do_nothing(index_elements=[Alert.dedupe_key]).returning(Alert.dedupe_key)
    )
    return [by_key[key] for key in inserted.scalars()]


async def watch(
    sessions: async_sessionmaker[AsyncSession], s: AuditSettings, metrics: AlertMetrics, calendar: WorkingCalendar
) -> None:
    """Evaluate the rules every ``anomaly_interval_s`` seconds; count and log what is new."""
    while True:
        try:
            async with sessions.begin() as session:
                raised = await evaluate(session, s, calendar)
                await metrics.refresh(session)
            for alert in raised:
                metrics.raised.labels(alert.rule.value).inc()
                # Subject hashes only, never a clear identifier (none is ever known here).
                log.warning("anomaly alert", extra={"ctx_rule": alert.rule.value, "ctx_detail": alert.detail})
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: the next round evaluates the same windows
            log.warning("could not evaluate the anomaly rules", exc_info=True)
        await asyncio.sleep(s.anomaly_interval_s)


# ----------------------------------------------------------------------------- alerts


async def list_alerts(
    session: AsyncSession, limit: int, cursor: int | None, acknowledged: bool | None, rule: AlertRule | None
) -> tuple[list[Alert], str | None]:
    """Newest first; ``acknowledged`` True/False filters, None lists both."""
    query = one_more(select(Alert).order_by(Alert.id.desc()), limit)
    if cursor is not None:
        query = query.where(Alert.id < cursor)
    if acknowledged is not None:
        query = query.where(Alert.acknowledged_at.is_not(None) if acknowledged else Alert.acknowledged_at.is_(None))
    if rule is not None:
        query = query.where(Alert.rule == rule.value)
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda a: a.id)


async def acknowledge(session: AsyncSession, alert_id: int, by: str) -> Alert:
    """确认告警: an auditor has looked at the alert; acknowledging twice is refused (409)."""
    alert = await session.get(Alert, alert_id, with_for_update=True)
    if alert is None:
        raise AuditProblem.UNKNOWN_ALERT.problem(f"no alert {alert_id}")
    if alert.acknowledged_at is not None:
        raise AuditProblem.ALERT_ACKNOWLEDGED.problem(
            f"alert {alert_id} was acknowledged at {alert.acknowledged_at.isoformat()} by {alert.acknowledged_by}"
        )
    await session.execute(
        update(Alert).where(Alert.id == alert_id).values(acknowledged_at=func.now(), acknowledged_by=by)
    )
    await session.refresh(alert)
    return alert

"""Auditors' queries (审计查询): search the trail by time, action, consumer, provider, resource,
purpose (事项), outcome and subject; page it in time order with signed cursors; export it as CSV;
count it per day. A data administrator (数据管理员) sees only what involves their department.

Subjects arrive in clear and are matched by their keyed hash (``services.common.subjects``): the
clear identifier is never stored, logged or echoed, and a cursor carries no filter value.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.models import AuditRecord
from services.audit.problems import AuditProblem
from services.audit.service import ID_SHAPED
from services.common.contracts.audit import AuditAction, AuditContext
from services.common.identifiers import InvalidIdentifier
from services.common.pagination import one_more, page
from services.common.security import Principal, Role, forbidden
from services.common.subjects import SubjectType, normalise_subject, subject_hashes

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
AGGREGATE_DAYS_MAX = 366  # one aggregate answer spans at most a year of days
AGGREGATE_DAYS_DEFAULT = 30
EXPORT_PAGE = 1000  # records per CSV chunk (one keyset query each)
# Outcomes of a query after which the consumer holds the data: what a citizen's report lists.
ACCESS_OUTCOMES = ("completed", "late_reply")
# What disclosed data about a person to a consumer (the citizen's report lists these).
SUBJECT_ACCESS_ACTIONS = (AuditAction.EXCHANGE_QUERY.value, AuditAction.EXCHANGE_FEED.value)


class Order(StrEnum):
    """Time order of a search (排序): newest first (the default) or oldest first."""

    DESC = "desc"
    ASC = "asc"


class GroupBy(StrEnum):
    """What an aggregate counts per day (按日统计)."""

    CONSUMER = "consumer"
    PROVIDER = "provider"
    RESOURCE = "resource"
    PURPOSE = "purpose"
    REASON = "reason"  # why refused or failed (the problem code): denials by reason (拒绝原因)


GROUP_COLUMNS = {
    GroupBy.CONSUMER: AuditRecord.consumer_dept,
    GroupBy.PROVIDER: AuditRecord.provider_dept,
    GroupBy.RESOURCE: AuditRecord.resource_code,
    GroupBy.PURPOSE: AuditRecord.purpose,
    GroupBy.REASON: AuditRecord.reason,
}


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """What a search keeps: every given criterion must hold. ``dept`` restricts to records whose
    consumer or provider is that department (a data administrator's view, 本部门)."""

    start: datetime | None = None  # occurred_at >= start
    end: datetime | None = None  # occurred_at < end
    type: str | None = None
    actions: tuple[str, ...] = field(default_factory=tuple)  # any of these (the citizen's report)
    consumer: str | None = None
    provider: str | None = None
    resource: str | None = None
    purpose: str | None = None
    outcome: str | None = None
    reason: str | None = None  # the problem code of a denial or failure (拒绝原因)
    client_id: str | None = None
    bundle_id: str | None = None  # every record of one evidence bundle (免提交)
    batch_id: str | None = None  # every record of one batch (批量查询)
    subject_hashes: tuple[str, ...] | None = None  # the subject under every key kept (any of them)
    outcomes: tuple[str, ...] = field(default_factory=tuple)  # any of these (the citizen's report)
    dept: str | None = None

    def fingerprint(self, order: Order) -> str:
        """A digest of the filter and order: a cursor is valid only for the search that made it."""
        values = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}
        if not self.actions:  # unset, it is left out: cursors issued before it existed stay valid
            del values["actions"]
        return hashlib.sha256(orjson.dumps([values, order.value], option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


EQUALITY = {
    "type": AuditRecord.action,
    "consumer": AuditRecord.consumer_dept,
    "provider": AuditRecord.provider_dept,
    "resource": AuditRecord.resource_code,
    "purpose": AuditRecord.purpose,
    "outcome": AuditRecord.outcome,
    "reason": AuditRecord.reason,
    "client_id": AuditRecord.consumer_client_id,
    "bundle_id": AuditRecord.bundle_id,
    "batch_id": AuditRecord.batch_id,
}


def conditions(f: RecordFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [
        column == value for name, column in EQUALITY.items() if (value := getattr(f, name)) is not None
    ]
    if f.start is not None:
        where.append(AuditRecord.occurred_at >= f.start)
    if f.end is not None:
        where.append(AuditRecord.occurred_at < f.end)
    if f.subject_hashes is not None:
        where.append(AuditRecord.subject_hash.in_(f.subject_hashes))
    if f.actions:
        where.append(AuditRecord.action.in_(f.actions))
    if f.outcomes:
        where.append(AuditRecord.outcome.in_(f.outcomes))
    if f.dept is not None:
        where.append(or_(AuditRecord.consumer_dept == f.dept, AuditRecord.provider_dept == f.dept))
    return where


# ----------------------------------------------------------------------------- input


def aware(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    """``moment`` with a time zone: one given without an offset is a time in the platform's zone."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=zone)


def time_range(start: datetime | None, end: datetime | None, zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """The half-open range [start, end), both zone-aware; start after end is refused."""
    start, end = aware(start, zone), aware(end, zone)
    try:
        if start is not None and end is not None and start > end:
            raise AuditProblem.TIME_RANGE.problem(f"from ({start.isoformat()}) is after to ({end.isoformat()})")
        # Comparing offsets normalises to UTC, which can overflow at the edges of datetime's range.
        for moment in (start, end):
            if moment is not None:
                moment.astimezone(UTC)
    except OverflowError as err:
        raise AuditProblem.TIME_RANGE.problem("a time is outside the representable range") from err
    return start, end


def hashed_subject(keys: Mapping[str, str], subject_type: SubjectType, value: str) -> tuple[str, ...]:
    """The keyed hashes of a subject given in clear, under every subject key kept (current and
    retired: records made before a rotation stay findable); an invalid identifier is refused (422)."""
    try:
        normalised = normalise_subject(subject_type, value)
    except InvalidIdentifier as err:
        raise AuditProblem.INVALID_SUBJECT.problem(str(err)) from err
    return tuple(sorted(subject_hashes(keys, subject_type, normalised).values()))


def visible_department(principal: Principal, consumer: str | None, provider: str | None) -> str | None:
    """The department a caller's search is confined to: None for an auditor (审计员, everything);
    their own for a data administrator, who may not ask for records between two other
    departments. Anyone else is refused."""
    if principal.has_role(Role.AUDITOR):
        return None
    if not principal.is_person or not principal.has_role(Role.DATA_ADMIN):
        raise forbidden("Only an auditor or a department's data administrator may search the audit trail.")
    named = [d for d in (consumer, provider) if d is not None]
    if len(named) == 2 and principal.dept not in named:
        raise forbidden("A data administrator sees only the accesses of their own department (consumer or provider).")
    return principal.dept


# ----------------------------------------------------------------------------- cursors


class Cursors:
    """Opaque keyset cursors (游标): the position (occurred_at, seq) of the last row shown, bound to
    the search's filter and order and signed (HMAC-SHA256), so that a changed or reused cursor is
    refused instead of silently paging another result."""

    def __init__(self, secret: str) -> None:
        # A key of its own, derived from the platform secret: a cursor is no subject hash.
        self._key = hmac.new(secret.encode(), b"tongban-audit-cursor", hashlib.sha256).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]

    def encode(self, record: AuditRecord, fingerprint: str) -> str:
        micros = (record.occurred_at - EPOCH) // timedelta(microseconds=1)
        payload = orjson.dumps([micros, record.seq, fingerprint])
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode().rstrip("=")

    def decode(self, cursor: str, fingerprint: str) -> tuple[datetime, int]:
        bad = AuditProblem.INVALID_CURSOR.problem(
            "the cursor was not issued for this search (changed, or used with other filters or order)"
        )
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except ValueError as err:
            raise bad from err
        payload, mac = raw[:-16], raw[-16:]
        if len(raw) <= 16 or not hmac.compare_digest(mac, self._mac(payload)):
            raise bad
        micros, seq, bound = orjson.loads(payload)  # signed by us: well-formed
        if bound != fingerprint:
            raise bad
        return EPOCH + timedelta(microseconds=micros), int(seq)


# ----------------------------------------------------------------------------- look-ups audited


# A filter value that looks like a resident identity number (typed into the wrong filter) is not
# written into the trail in clear.
FILTER_VALUE_WITHHELD = "…withheld"


def described_filter(values: Mapping[str, object]) -> tuple[str, ...]:
    """A look-up's filter as the audit event's ``fields`` (``name=value``, those given only):
    what an auditor asked for, recorded with the answer. The subject is never among them; it
    goes in the event's ``subject_hash``."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        if ID_SHAPED.search(text.encode("utf-8", "surrogatepass")):
            text = FILTER_VALUE_WITHHELD
        out.append(f"{name}={text}")
    return tuple(out)


def lookup_context(
    principal: Principal,
    keys: Mapping[str, str],
    key_id: str,
    described: Sequence[str],
    subject: tuple[SubjectType, str] | None,
) -> AuditContext:
    """The audit context of a look-up of the trail by ``principal`` (审计查询留痕): who asked (the
    auditor, data administrator or citizen portal, and their department), the filter described,
    and the subject (type, identifier in clear, already validated) as its keyed hash under the
    current key ``key_id`` — so that a search by subject finds who looked the person up, too."""
    ctx = AuditContext(
        actor=principal.sub,
        consumer_dept=principal.dept,
        consumer_client_id=principal.client_id or "",
        fields=tuple(described),
    )
    if subject is None:
        return ctx
    subject_type, value = subject
    normalised = normalise_subject(subject_type, value)
    return ctx.with_(
        subject_type=subject_type,
        subject_hash=subject_hashes({key_id: keys[key_id]}, subject_type, normalised)[key_id],
        subject_key_id=key_id,
    )


# ----------------------------------------------------------------------------- search


def ordered(query: Select[Any], order: Order, after: tuple[datetime, int] | None) -> Select[Any]:
    position = tuple_(AuditRecord.occurred_at, AuditRecord.seq)
    if order is Order.DESC:
        query = query.order_by(AuditRecord.occurred_at.desc(), AuditRecord.seq.desc())
        return query if after is None else query.where(position < tuple_(*after))
    query = query.order_by(AuditRecord.occurred_at, AuditRecord.seq)
    return query if after is None else query.where(position > tuple_(*after))


async def search(
    session: AsyncSession, f: RecordFilter, order: Order, limit: int, cursor: str | None, cursors: Cursors
) -> tuple[list[AuditRecord], str | None]:
    """One page of the records ``f`` keeps, in time order, and the cursor of the next page."""
    fingerprint = f.fingerprint(order)
    after = cursors.decode(cursor, fingerprint) if cursor is not None else None
    query = ordered(select(AuditRecord).where(*conditions(f)), order, after)
    rows = list((await session.scalars(one_more(query, limit))).all())
    return page(rows, limit, lambda r: cursors.encode(r, fingerprint))


# ----------------------------------------------------------------------------- CSV

CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("序号 seq", "seq"),
    ("发生时间 occurred_at", "occurred_at"),
    ("动作 action", "action"),
    ("结果 outcome", "outcome"),
    ("原因 reason", "reason"),
    ("操作者 actor", "actor"),
    ("使用部门 consumer", "consumer_dept"),
    ("使用系统 client_id", "consumer_client_id"),
    ("提供部门 provider", "provider_dept"),
    ("信息资源 resource", "resource_code"),
    ("事项 purpose", "purpose"),
    ("主体类型 subject_type", "subject_type"),
    ("主体哈希 subject_hash", "subject_hash"),
    ("数据项 fields", "fields"),
    ("查询编号 query_id", "query_id"),
    ("材料包 bundle_id", "bundle_id"),
    ("批次 batch_id", "batch_id"),
    ("请求编号 request_id", "request_id"),
    ("记录哈希 hash", "hash"),
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a value that would start a formula (CSV injection,
    e.g. a purpose ``=HYPERLINK(…)`` sent by a client) is prefixed with an apostrophe."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        value = ";".join(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_rows(rows: Sequence[Sequence[object]], header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow([title for title, _ in CSV_COLUMNS])
    writer.writerows(rows)
    # The BOM makes Excel read UTF-8 (the Chinese titles) instead of the local code page.
    return (("\ufeff" if header else "") + out.getvalue()).encode()


async def export_csv(
    sessions: async_sessionmaker[AsyncSession], f: RecordFilter, order: Order, page_size: int = EXPORT_PAGE
) -> AsyncIterator[bytes]:
    """The records ``f`` keeps as CSV (UTF-8 with BOM, a header row), one chunk per keyset page:
    memory stays flat whatever the size. Runs after the route returned, so in a session of its own
    (read only; each page is its own short statement)."""
    yield csv_rows([], header=True)
    after: tuple[datetime, int] | None = None
    async with sessions() as session:
        while True:
            query = ordered(select(AuditRecord).where(*conditions(f)), order, after).limit(page_size)
            records = list((await session.scalars(query)).all())
            if not records:
                return
            yield csv_rows([[cell(getattr(r, name)) for _, name in CSV_COLUMNS] for r in records], header=False)
            after = (records[-1].occurred_at, records[-1].seq)
            session.expunge_all()  # nothing is kept between chunks


# ----------------------------------------------------------------------------- aggregates


def aggregate_range(
    start: datetime | None, end: datetime | None, zone: ZoneInfo, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """The range an aggregate counts: the last 30 days by default, at most a year."""
    end = end or (now or datetime.now(UTC))
    try:
        start = start or end - timedelta(days=AGGREGATE_DAYS_DEFAULT)
    except OverflowError as err:  # ``to`` in the first days of year 1
        raise AuditProblem.TIME_RANGE.problem("a time is outside the representable range") from err
    if end - start > timedelta(days=AGGREGATE_DAYS_MAX):
        raise AuditProblem.TIME_RANGE.problem(f"an aggregate spans at most {AGGREGATE_DAYS_MAX} days")
    return start, end


@dataclass(frozen=True, slots=True)
class DayCount:
    day: date
    key: str
    total: int
    outcomes: dict[str, int]


async def aggregate(session: AsyncSession, f: RecordFilter, by: GroupBy, zone: ZoneInfo) -> list[DayCount]:
    """Records per business day (in the platform's zone) and per ``by``, with their outcomes."""
    column = GROUP_COLUMNS[by]
    day = func.date(func.timezone(zone.key, AuditRecord.occurred_at)).label("day")
    query = (
        select(day, column, AuditRecord.outcome, func.count())
        .where(*conditions(f))
        .group_by(day, column, AuditRecord.outcome)
        .order_by(day, column)
    )
    counts: dict[tuple[date, str], dict[str, int]] = {}
    for when, key, outcome, n in await session.execute(query):
        counts.setdefault((when, key), {})[outcome] = int(n)
    return [DayCount(d, k, sum(o.values()), o) for (d, k), o in counts.items()]


# ----------------------------------------------------------------------------- the citizen's report


def may_read_subject_report(principal: Principal) -> None:
    """The citizen's report (数据使用记录) goes to the citizen portal (a system with the
    ``citizen_portal`` role, which shows it to the person after their own sign-in) and to
    auditors; never to a consuming or providing department."""
    portal = principal.is_system and principal.has_role(Role.CITIZEN_PORTAL)
    auditor = principal.is_person and principal.has_role(Role.AUDITOR)
    if not (portal or auditor):
        raise forbidden("Only the citizen portal and auditors may read a person's access report.")


def subject_report_filter(hashes: tuple[str, ...], start: datetime | None, end: datetime | None) -> RecordFilter:
    """The accesses to a person's data: the exchange's queries that delivered data about them,
    and the changes about them that change feeds (库表共享) served."""
    return RecordFilter(
        start=start, end=end, actions=SUBJECT_ACCESS_ACTIONS, subject_hashes=hashes, outcomes=ACCESS_OUTCOMES
    )

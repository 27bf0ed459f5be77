"""Auditors' queries over HTTP against the real PostgreSQL: filters, time order and signed
cursors, the CSV export, per-day aggregates, a data administrator's department, the citizen's
report, and every bad input refused with a problem and nothing changed."""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.audit.models import Alert, AuditRecord, ChainHead
from services.audit.service import append
from services.common.identifiers import credit_code_check_char
from services.common.pb import audit_pb2
from services.common.subjects import subject_hash
from services.connector.service import synthetic_residents
from tests.audit.conftest import Audit
from tests.integration.helpers import eventually

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Asia/Shanghai
PROBLEM = "application/problem+json"
# A 统一社会信用代码 with a wrong check character.
WRONG_CREDIT_CODE = "91110000600037341" + ("0" if credit_code_check_char("91110000600037341") != "0" else "1")


def dept() -> str:
    """A 统一社会信用代码-sized department code of this test's own (the store does not check it)."""
    return "T" + secrets.token_hex(8).upper() + "X"


def event(at: datetime, **values: Any) -> audit_pb2.AuditEvent:
    base: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "occurred_unix_ms": int(at.timestamp() * 1000),
        "service": "exchange",
        "action": "exchange.query",
        "outcome": "completed",
        "actor": "client-a",
        "consumer_client_id": "client-a",
        "resource_code": "101010/000001",
        "purpose": "ZDSHBZ-SP",
        "fields": ["姓名", "出生日期"],
    }
    return audit_pb2.AuditEvent(**(base | values))


async def add(sessions: async_sessionmaker[AsyncSession], events: list[audit_pb2.AuditEvent]) -> None:
    async with sessions.begin() as session:
        assert await append(session, events) == len(events)


# The trail's own look-up records (审计查询留痕), which arrive from audit.events a moment after
# their answer: a test's "changes nothing" counts everything else, and checks these by actor.
LOOK_UPS = ("audit.records.searched", "audit.records.exported", "audit.records.aggregated", "audit.subject_report.read")


async def counts(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    """(records other than look-ups, alerts)."""
    async with sessions() as session:
        records = await session.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.action.not_in(LOOK_UPS))
        )
        alerts = await session.scalar(select(func.count()).select_from(Alert))
    return int(records or 0), int(alerts or 0)


async def by_department(sessions: async_sessionmaker[AsyncSession], dept: str, n: int) -> list[AuditRecord]:
    """The records whose consumer_dept is ``dept``, once there are ``n`` (look-ups' records arrive
    from audit.events a moment after their answer)."""
    rows: list[AuditRecord] = []

    async def arrived() -> bool:
        nonlocal rows
        async with sessions() as session:
            query = select(AuditRecord).where(AuditRecord.consumer_dept == dept).order_by(AuditRecord.seq)
            rows = list((await session.scalars(query)).all())
        return len(rows) >= n

    await eventually(arrived, 30, f"{n} record(s) of {dept}")
    assert len(rows) == n, [r.action for r in rows]
    return rows


def is_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"].endswith("/" + code), response.json()


async def get_items(audit: Audit, headers: dict[str, str], **params: str) -> dict[str, Any]:
    response = await audit.client.get("/v1/audit/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_filters_time_order_and_cursor_pages(audit: Audit, sessions: async_sessionmaker[AsyncSession]) -> None:
    consumer, provider, other = dept(), dept(), dept()
    await add(
        sessions,
        [event(T0 + timedelta(minutes=i), consumer_dept=consumer, provider_dept=provider) for i in range(5)]
        + [
            event(T0, consumer_dept=consumer, provider_dept=other, purpose="OTHER-SP"),
            event(T0, consumer_dept=consumer, provider_dept=provider, outcome="denied", reason="no-grant"),
            event(T0, consumer_dept=consumer, provider_dept=provider, action="gateway.token.issued"),
        ],
    )
    base = {"consumer": consumer, "provider": provider, "outcome": "completed", "type": "exchange.query"}
    for order, expected in (("asc", list(range(5))), ("desc", list(range(4, -1, -1)))):
        seen: list[datetime] = []
        params = base | {"order": order, "limit": "2"}
        while True:
            body = await get_items(audit, audit.auditor, **params)
            seen += [datetime.fromisoformat(r["occurred_at"]) for r in body["items"]]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        assert seen == [T0 + timedelta(minutes=i) for i in expected]
    assert len((await get_items(audit, audit.auditor, consumer=consumer))["items"]) == 8
    only = await get_items(audit, audit.auditor, consumer=consumer, purpose="OTHER-SP")
    assert [r["provider_dept"] for r in only["items"]] == [other]
    denied = await get_items(audit, audit.auditor, consumer=consumer, outcome="denied")
    assert [r["reason"] for r in denied["items"]] == ["no-grant"]
    window = await get_items(
        audit,
        audit.auditor,
        consumer=consumer,
        purpose="ZDSHBZ-SP",
        outcome="completed",
        **{"from": (T0 + timedelta(minutes=1)).isoformat(), "to": (T0 + timedelta(minutes=3)).isoformat()},
    )
    assert [datetime.fromisoformat(r["occurred_at"]) for r in window["items"]] == [
        T0 + timedelta(minutes=m)
        for m in (2, 1)  # [from, to): newest first
    ]
    # A time without an offset is a time in the platform's zone (Asia/Shanghai, UTC+8).
    local = await get_items(audit, audit.auditor, consumer=consumer, to="2026-03-02T10:00:01", outcome="completed")
    assert {datetime.fromisoformat(r["occurred_at"]) for r in local["items"]} == {T0}


async def test_every_record_of_one_bundle_or_batch_is_found_by_its_id(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """免提交 and 批量查询: the records of one evidence bundle (its materials' queries and the
    bundle's own) and of one batch are found by the id that ties them, and by nothing else."""
    consumer = dept()
    bundle, other_bundle, batch = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    materials = [event(T0, consumer_dept=consumer, bundle_id=bundle, query_id=str(uuid.uuid4())) for _ in range(3)]
    own = event(T0, consumer_dept=consumer, action="exchange.evidence", bundle_id=bundle, query_id=bundle)
    await add(
        sessions,
        [
            *materials,
            own,
            event(T0, consumer_dept=consumer, bundle_id=other_bundle),
            *(event(T0, consumer_dept=consumer, batch_id=batch) for _ in range(2)),
            event(T0, consumer_dept=consumer),
        ],
    )
    found = (await get_items(audit, audit.auditor, bundle_id=bundle))["items"]
    assert {r["event_id"] for r in found} == {e.event_id for e in [*materials, own]}
    assert {r["bundle_id"] for r in found} == {bundle} and {r["batch_id"] for r in found} == {""}
    queries = await get_items(audit, audit.auditor, bundle_id=bundle, type="exchange.query")
    assert sorted(r["query_id"] for r in queries["items"]) == sorted(e.query_id for e in materials)
    batched = (await get_items(audit, audit.auditor, batch_id=batch))["items"]
    assert len(batched) == 2 and {r["batch_id"] for r in batched} == {batch}
    assert (await get_items(audit, audit.auditor, consumer=consumer, bundle_id="no-such"))["items"] == []
    csv = await audit.client.get("/v1/audit/events/export", params={"bundle_id": bundle}, headers=audit.auditor)
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 1 + 4, csv.text
    assert "材料包 bundle_id" in csv.text.splitlines()[0] and bundle in csv.text


async def test_subject_is_matched_by_its_keyed_hash(audit: Audit, sessions: async_sessionmaker[AsyncSession]) -> None:
    person, stranger = (r.id_number for r in synthetic_residents(2))
    key = audit.settings.subject_hash_key
    consumer = dept()
    await add(
        sessions,
        [
            event(
                T0, consumer_dept=consumer, subject_type="id_card", subject_hash=subject_hash(key, "id_card", person)
            ),
            event(
                T0, consumer_dept=consumer, subject_type="id_card", subject_hash=subject_hash(key, "id_card", stranger)
            ),
        ],
    )
    found = await get_items(audit, audit.auditor, consumer=consumer, subject=person)
    assert [r["subject_hash"] for r in found["items"]] == [subject_hash(key, "id_card", person)]
    assert person not in str(found)


async def test_csv_export_streams_every_record_with_a_header(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    consumer = dept()
    await add(
        sessions,
        [event(T0 + timedelta(seconds=i), consumer_dept=consumer) for i in range(7)]
        + [event(T0 + timedelta(seconds=9), consumer_dept=consumer, purpose="=HYPERLINK(1)")],
    )
    response = await audit.client.get(
        "/v1/audit/events/export", params={"consumer": consumer, "order": "asc"}, headers=audit.auditor
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff序号 seq,发生时间 occurred_at")
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    header, body = rows[0], rows[1:]
    assert len(body) == 8
    assert [datetime.fromisoformat(r[header.index("发生时间 occurred_at")]) for r in body[:7]] == [
        T0 + timedelta(seconds=i) for i in range(7)
    ]
    assert body[-1][header.index("事项 purpose")] == "'=HYPERLINK(1)"  # not a formula in a spreadsheet
    assert body[0][header.index("数据项 fields")] == "姓名;出生日期"


async def test_csv_export_pages_through_more_than_one_chunk(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from services.audit.queries import Order, RecordFilter, export_csv

    consumer = dept()
    await add(sessions, [event(T0 + timedelta(seconds=i), consumer_dept=consumer) for i in range(5)])
    chunks = [c async for c in export_csv(sessions, RecordFilter(consumer=consumer), Order.DESC, page_size=2)]
    assert len(chunks) == 1 + 3  # the header, then pages of 2, 2 and 1
    assert sum(c.count(b"\r\n") for c in chunks) == 1 + 5


async def test_aggregates_per_day_and_key(audit: Audit, sessions: async_sessionmaker[AsyncSession]) -> None:
    consumer, second = dept(), dept()
    late = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # 01:00 on 3 March in Asia/Shanghai
    await add(
        sessions,
        [
            event(T0, consumer_dept=consumer, purpose="P-AGG"),
            event(T0, consumer_dept=consumer, purpose="P-AGG", outcome="denied"),
            event(late, consumer_dept=consumer, purpose="P-AGG"),
            event(T0, consumer_dept=second, purpose="P-AGG"),
        ],
    )
    params = {"by": "consumer", "purpose": "P-AGG", "from": "2026-03-01T00:00:00Z", "to": "2026-03-05T00:00:00Z"}
    response = await audit.client.get("/v1/audit/aggregates", params=params, headers=audit.auditor)
    assert response.status_code == 200, response.text
    items = {(i["day"], i["key"]): i for i in response.json()["items"]}
    assert items[("2026-03-02", consumer)]["total"] == 2
    assert items[("2026-03-02", consumer)]["outcomes"] == {"completed": 1, "denied": 1}
    assert items[("2026-03-03", consumer)]["total"] == 1  # a business day, not a UTC day
    assert items[("2026-03-02", second)]["total"] == 1
    by_purpose = await audit.client.get(
        "/v1/audit/aggregates", params=params | {"by": "purpose", "consumer": consumer}, headers=audit.auditor
    )
    assert {(i["day"], i["key"], i["total"]) for i in by_purpose.json()["items"]} == {
        ("2026-03-02", "P-AGG", 2),
        ("2026-03-03", "P-AGG", 1),
    }


async def test_denials_by_reason_filtered_and_counted_per_day(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """拒绝原因: the ``reason`` filter keeps the records refused for one reason, and ``by=reason``
    counts them per day (the console's chart of denials by reason)."""
    consumer = dept()
    await add(
        sessions,
        [
            event(T0, consumer_dept=consumer, outcome="denied", reason="purpose-not-granted"),
            event(T0, consumer_dept=consumer, outcome="denied", reason="purpose-not-granted"),
            event(T0, consumer_dept=consumer, outcome="denied", reason="item-not-granted"),
            event(T0, consumer_dept=consumer),
        ],
    )
    window = {"consumer": consumer, "from": "2026-03-01T00:00:00Z", "to": "2026-03-05T00:00:00Z"}
    found = await get_items(audit, audit.auditor, **window, reason="item-not-granted")
    assert [(r["outcome"], r["reason"]) for r in found["items"]] == [("denied", "item-not-granted")]
    response = await audit.client.get(
        "/v1/audit/aggregates", params=window | {"by": "reason", "outcome": "denied"}, headers=audit.auditor
    )
    assert response.status_code == 200, response.text
    assert response.json()["by"] == "reason"
    assert {(i["day"], i["key"], i["total"]) for i in response.json()["items"]} == {
        ("2026-03-02", "purpose-not-granted", 2),
        ("2026-03-02", "item-not-granted", 1),
    }
    too_long = await audit.client.get("/v1/audit/events", params={"reason": "x" * 65}, headers=audit.auditor)
    is_problem(too_long, 422, "validation")


async def test_a_data_admin_sees_only_their_department(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    mine, theirs, third = dept(), dept(), dept()
    await add(
        sessions,
        [
            event(T0, consumer_dept=mine, provider_dept=theirs, purpose="P-ADM"),
            event(T0, consumer_dept=theirs, provider_dept=mine, purpose="P-ADM"),
            event(T0, consumer_dept=theirs, provider_dept=third, purpose="P-ADM"),
        ],
    )
    admin = audit.token(["data_admin"], dept=mine)
    seen = await get_items(audit, admin, purpose="P-ADM")
    assert {(r["consumer_dept"], r["provider_dept"]) for r in seen["items"]} == {(mine, theirs), (theirs, mine)}
    # Naming the other side is fine: the records are still the department's own.
    seen = await get_items(audit, admin, purpose="P-ADM", consumer=theirs)
    assert [(r["consumer_dept"], r["provider_dept"]) for r in seen["items"]] == [(theirs, mine)]
    everything = await get_items(audit, audit.auditor, purpose="P-ADM")
    assert len(everything["items"]) == 3
    export = await audit.client.get("/v1/audit/events/export", params={"purpose": "P-ADM"}, headers=admin)
    assert export.status_code == 200 and third not in export.text and export.text.count("\r\n") == 3
    aggregate = await audit.client.get(
        "/v1/audit/aggregates",
        params={"by": "provider", "purpose": "P-ADM", "from": "2026-03-01T00:00:00Z", "to": "2026-03-05T00:00:00Z"},
        headers=admin,
    )
    assert {i["key"] for i in aggregate.json()["items"]} == {mine, theirs}


async def test_the_citizens_report(audit: Audit, sessions: async_sessionmaker[AsyncSession]) -> None:
    person = synthetic_residents(3)[2].id_number
    hashed = subject_hash(audit.settings.subject_hash_key, "id_card", person)
    other = subject_hash(audit.settings.subject_hash_key, "id_card", synthetic_residents(3)[1].id_number)
    consumer = dept()
    await add(
        sessions,
        [
            event(T0, consumer_dept=consumer, provider_dept="P1", subject_type="id_card", subject_hash=hashed),
            event(T0, consumer_dept=consumer, subject_hash=hashed, subject_type="id_card", outcome="denied"),
            event(T0, consumer_dept=consumer, subject_hash=hashed, action="exchange.evidence"),
            # A change about the person read through a change feed (库表共享), and one about another.
            event(T0 + timedelta(seconds=1), consumer_dept=consumer, consumer_client_id="client-f", actor="client-f",
                  provider_dept="P1", action="exchange.feed", subject_type="id_card", subject_hash=hashed,
                  fields=["户籍地址"], reason="upsert 0:7; page 0:6..0:7, 2 changes"),
            event(T0 + timedelta(seconds=1), consumer_dept=consumer, consumer_client_id="client-f", actor="client-f",
                  provider_dept="P1", action="exchange.feed", subject_type="id_card", subject_hash=other,
                  fields=["姓名"], reason="upsert 0:6; page 0:6..0:7, 2 changes"),
        ],
    )  # fmt: skip
    body = {"subject": {"type": "id_card", "value": person}}
    portal = audit.token(["citizen_portal"], kind="system")
    for headers in (portal, audit.auditor):
        response = await audit.client.post("/v1/audit/subjects/accesses", json=body, headers=headers)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert [
            (i["action"], i["consumer_dept"], i["consumer_client_id"], i["purpose"], i["fields"]) for i in items
        ] == [
            ("exchange.feed", consumer, "client-f", "ZDSHBZ-SP", ["户籍地址"]),  # newest first
            ("exchange.query", consumer, "client-a", "ZDSHBZ-SP", ["姓名", "出生日期"]),
        ]
        assert {i["provider_dept"] for i in items} == {"P1"} and "subject_hash" not in items[0]
    report = response.json()
    for headers in (
        audit.token(["consumer"], kind="system"),
        audit.token(["provider"], kind="system"),
        audit.token(["data_admin"]),
        audit.token(["citizen_portal"]),  # a person cannot hold a system's role
    ):
        response = await audit.client.post("/v1/audit/subjects/accesses", json=body, headers=headers)
        is_problem(response, 403, "forbidden")
    # The contract's query-string form answers the same, under the same rules.
    by_query = await audit.client.get("/v1/audit/subjects/accesses", params={"value": person}, headers=portal)
    assert by_query.status_code == 200 and by_query.json() == report
    denied = await audit.client.get(
        "/v1/audit/subjects/accesses", params={"value": person}, headers=audit.token(["consumer"], kind="system")
    )
    is_problem(denied, 403, "forbidden")
    unknown = await audit.client.get(
        "/v1/audit/subjects/accesses", params={"value": person, "subject": person}, headers=portal
    )
    is_problem(unknown, 422, "unknown-filter")


async def test_bad_input_gets_a_problem_and_changes_nothing(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    consumer = dept()
    await add(sessions, [event(T0 + timedelta(seconds=i), consumer_dept=consumer) for i in range(3)])
    first = await get_items(audit, audit.auditor, consumer=consumer, limit="1")
    cursor = first["next_cursor"]
    assert cursor is not None
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    before = await counts(sessions)
    refused = f"refused-{secrets.token_hex(4)}"  # every refused look-up's caller
    auditor = audit.token(["auditor"], sub=refused)
    admin = audit.token(["data_admin"], dept=consumer, sub=refused)
    cases: list[tuple[str, dict[str, str], dict[str, str], int, str]] = [
        ("/v1/audit/events", {"from": "2026-03-03T00:00:00Z", "to": "2026-03-02T00:00:00Z"}, auditor, 422,
         "time-range-invalid"),
        ("/v1/audit/events", {"from": "yesterday"}, auditor, 422, "validation"),
        ("/v1/audit/events", {"to": "2026-13-45T99:00:00"}, auditor, 422, "validation"),
        ("/v1/audit/events", {"consumer_dept": consumer}, auditor, 422, "unknown-filter"),
        ("/v1/audit/events", {"limit": "1001"}, auditor, 422, "validation"),
        ("/v1/audit/events", {"limit": "0"}, auditor, 422, "validation"),
        ("/v1/audit/events", {"subject": "110106197509161951"}, auditor, 422, "invalid-subject"),
        ("/v1/audit/events", {"subject": WRONG_CREDIT_CODE, "subject_type": "credit_code"}, auditor, 422,
         "invalid-subject"),
        ("/v1/audit/events", {"consumer": consumer, "limit": "1", "cursor": tampered}, auditor, 422,
         "invalid-cursor"),
        ("/v1/audit/events", {"consumer": consumer, "limit": "1", "cursor": "not*base64"}, auditor, 422,
         "invalid-cursor"),
        # A cursor is bound to its search: another filter or order is refused, not silently paged.
        ("/v1/audit/events", {"consumer": dept(), "limit": "1", "cursor": cursor}, auditor, 422,
         "invalid-cursor"),
        ("/v1/audit/events", {"consumer": consumer, "order": "asc", "limit": "1", "cursor": cursor}, auditor,
         422, "invalid-cursor"),
        ("/v1/audit/events", {"order": "sideways"}, auditor, 422, "validation"),
        ("/v1/audit/events", {"type": "exchange.querry"}, auditor, 422, "validation"),  # not an AuditAction
        ("/v1/audit/events", {"consumer": dept(), "provider": dept()}, admin, 403, "forbidden"),
        ("/v1/audit/events", {}, audit.token(["consumer"], kind="system", sub=refused), 403, "forbidden"),
        ("/v1/audit/events", {}, audit.token(["approver"], sub=refused), 403, "forbidden"),
        ("/v1/audit/events/export", {"from": "2026-03-03T00:00:00Z", "to": "2026-03-02T00:00:00Z"}, auditor,
         422, "time-range-invalid"),
        ("/v1/audit/events/export", {"cursor": cursor}, auditor, 422, "unknown-filter"),
        ("/v1/audit/events/export", {"consumer": dept(), "provider": dept()}, admin, 403, "forbidden"),
        ("/v1/audit/aggregates", {}, auditor, 422, "validation"),  # by is required
        ("/v1/audit/aggregates", {"by": "colour"}, auditor, 422, "validation"),
        ("/v1/audit/aggregates", {"by": "consumer", "from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
         auditor, 422, "time-range-invalid"),
        ("/v1/audit/aggregates", {"by": "consumer", "to": "0001-01-02T00:00:00Z"}, auditor, 422,
         "time-range-invalid"),
        ("/v1/audit/aggregates", {"by": "consumer", "limit": "5"}, auditor, 422, "unknown-filter"),
        ("/v1/audit/alerts", {"rule": "nonsense"}, auditor, 422, "validation"),
        ("/v1/audit/alerts", {"severity": "high"}, auditor, 422, "unknown-filter"),
        ("/v1/audit/alerts", {}, admin, 403, "forbidden"),
    ]  # fmt: skip
    for path, params, headers, status, code in cases:
        response = await audit.client.get(path, params=params, headers=headers)
        is_problem(response, status, code)
        assert "110106197509161951" not in response.text  # the identifier is not echoed
    for body, headers, status, code in [
        ({"subject": {"type": "id_card", "value": "110106197509161951"}}, auditor, 422, "invalid-subject"),
        ({"subject": {"type": "passport", "value": "E12345678"}}, auditor, 422, "validation"),
        ({"subject": {"value": "11010619750916195X"}, "extra": 1}, auditor, 422, "validation"),
        ({"subject": {"value": "11010619750916195X"}, "from": "2026-03-03T00:00:00Z", "to": "2026-03-02T00:00:00Z"},
         auditor, 422, "time-range-invalid"),
        ({"subject": {"value": "11010619750916195X"}, "cursor": tampered}, auditor, 422, "invalid-cursor"),
        ({"subject": {"value": "11010619750916195X"}, "limit": 5000}, auditor, 422, "validation"),
    ]:  # fmt: skip
        response = await audit.client.post("/v1/audit/subjects/accesses", json=body, headers=headers)
        is_problem(response, status, code)
    assert await counts(sessions) == before
    # A refused look-up stages no record of itself: once a later look-up's record is in the
    # trail, none by the refused caller is (it would have been committed, and sent, first).
    later = f"later-{secrets.token_hex(4)}"
    await get_items(audit, audit.token(["auditor"], sub=later), consumer=consumer, limit="1")
    await audit.recorded(later)
    async with sessions() as session:
        assert not (await session.scalars(select(AuditRecord.event_id).where(AuditRecord.actor == refused))).all()


filter_values = st.one_of(
    st.none(),
    st.text(max_size=70),
    st.sampled_from(
        ["", "exchange.query", "completed", "11010619750916195X", "2026-03-02", "9999-12-31T23:59:59-23:59"]
    ),
)
times = st.one_of(
    st.none(),
    st.datetimes().map(datetime.isoformat),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "now", "", "2026-02-30"]),
)
PARAMS = ("type", "consumer", "provider", "resource", "purpose", "outcome", "client_id", "subject", "subject_type",
          "order", "limit", "cursor", "by", "bogus")  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "subject": st.one_of(
                st.fixed_dictionaries({}, optional={"type": filter_values, "value": filter_values}), filter_values
            ),
            "from": times,
            "to": times,
            "limit": st.one_of(st.integers(min_value=-5, max_value=2**70), filter_values),
            "cursor": filter_values,
            "bogus": filter_values,
        },
    ),
)
async def test_no_citizen_report_request_gets_a_server_error(audit: Audit, body: dict[str, Any]) -> None:
    body.setdefault("subject", {"type": "id_card", "value": "11010619750916195X"})
    response = await audit.client.post("/v1/audit/subjects/accesses", json=body, headers=audit.auditor)
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/v1/audit/events", "/v1/audit/events/export", "/v1/audit/aggregates"]),
    values=st.fixed_dictionaries({}, optional=dict.fromkeys(PARAMS, filter_values)),
    start=times,
    end=times,
    limit=st.one_of(st.none(), st.integers(min_value=-5, max_value=2**70).map(str)),
    role=st.sampled_from(["auditor", "data_admin"]),
)
async def test_no_query_gets_a_server_error(
    audit: Audit,
    path: str,
    values: dict[str, str | None],
    start: str | None,
    end: str | None,
    limit: str | None,
    role: str,
) -> None:
    params = {k: v for k, v in values.items() if v is not None}
    params |= {k: v for k, v in (("from", start), ("to", end), ("limit", limit)) if v is not None}
    response = await audit.client.get(path, params=params, headers=audit.token([role]))
    assert response.status_code < 500, (params, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == PROBLEM


async def test_every_look_up_of_the_records_is_itself_recorded(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """审计查询留痕: a search (by subject, consumer, time range), a CSV export, an aggregate and a
    citizen's report each append one record — who asked, with which filter, the subject only as
    its keyed hash under the current key — in the trail they read; the chain still verifies."""
    person = synthetic_residents(5)[4].id_number
    hashed = subject_hash(audit.settings.subject_hash_key, "id_card", person)
    consumer = dept()
    await add(sessions, [event(T0, consumer_dept=consumer, subject_type="id_card", subject_hash=hashed)])
    looker = dept()
    auditor = audit.token(["auditor"], dept=looker)
    portal = audit.token(["citizen_portal"], kind="system", dept=looker)
    window = {"from": "2026-03-01T00:00:00+08:00", "to": "2026-03-03T00:00:00+08:00"}
    asked = [
        ("get", "/v1/audit/events", {"subject": person, "consumer": consumer, **window}, auditor),
        ("get", "/v1/audit/events/export", {"consumer": consumer}, auditor),
        ("get", "/v1/audit/aggregates", {"by": "purpose", **window}, auditor),
        ("post", "/v1/audit/subjects/accesses", {"subject": {"type": "id_card", "value": person}}, portal),
        ("get", "/v1/audit/subjects/accesses", {"value": person}, auditor),
    ]
    for method, path, sent, headers in asked:
        if method == "post":
            response = await audit.client.post(path, json=sent, headers=headers)
        else:
            response = await audit.client.get(path, params=sent, headers=headers)
        assert response.status_code == 200, response.text

    # Each answer was sent once its record was committed to the audit outbox; the records reach
    # the chain through audit.events in a batch, in no promised order between them.
    rows = await by_department(sessions, looker, 5)
    assert sorted((r.service, r.action, r.outcome) for r in rows) == [
        ("audit", "audit.records.aggregated", "completed"),
        ("audit", "audit.records.exported", "completed"),
        ("audit", "audit.records.searched", "completed"),
        ("audit", "audit.subject_report.read", "completed"),
        ("audit", "audit.subject_report.read", "completed"),
    ]
    [search] = [r for r in rows if r.action == "audit.records.searched"]
    [csv_export] = [r for r in rows if r.action == "audit.records.exported"]
    [counted] = [r for r in rows if r.action == "audit.records.aggregated"]
    [by_portal] = [r for r in rows if r.action == "audit.subject_report.read" and r.consumer_client_id]
    [by_auditor] = [r for r in rows if r.action == "audit.subject_report.read" and not r.consumer_client_id]
    assert set(search.fields) == {
        f"consumer={consumer}",
        "from=2026-03-01T00:00:00+08:00",
        "to=2026-03-03T00:00:00+08:00",
        "subject_type=id_card",
        "order=desc",
        "limit=100",
    }
    assert set(csv_export.fields) == {f"consumer={consumer}", "format=csv", "order=desc"}
    assert "by=purpose" in counted.fields and counted.subject_hash == ""
    assert by_portal.consumer_client_id and by_portal.actor == by_portal.consumer_client_id
    for looked_up in (search, by_portal, by_auditor):
        assert (looked_up.subject_type, looked_up.subject_hash) == ("id_card", hashed)
        assert looked_up.subject_key_id == audit.settings.subject_hash_key_id
    for row in rows:  # the identifier in clear is in none of them
        assert person not in str([getattr(row, c.key) for c in AuditRecord.__table__.columns])
        assert row.actor.startswith("someone-")
    # A search by the person now also shows who looked them up (the citizen's report does not:
    # it lists the exchange's queries only).
    found = await get_items(audit, audit.auditor, subject=person, type="audit.subject_report.read")
    assert len(found["items"]) == 2
    report = await audit.client.post(
        "/v1/audit/subjects/accesses", json={"subject": {"type": "id_card", "value": person}}, headers=portal
    )
    assert len(report.json()["items"]) == 1
    verified = await audit.client.get("/v1/audit/verify", headers=audit.auditor)
    assert verified.json()["ok"] is True, verified.json()


async def test_a_look_up_does_not_wait_for_the_chains_lock(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A search is answered while an append holds the chain head's lock (its record is staged in
    the audit outbox, not appended in the request), and its record is in the trail once the
    append is done."""
    consumer = dept()
    await add(sessions, [event(T0, consumer_dept=consumer)])
    looker = f"while-locked-{secrets.token_hex(4)}"
    async with sessions.begin() as appending:
        await appending.get(ChainHead, 1, with_for_update=True)  # as an append in progress holds it
        response = await asyncio.wait_for(
            audit.client.get(
                "/v1/audit/events", params={"consumer": consumer}, headers=audit.token(["auditor"], sub=looker)
            ),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == 1
    [record] = await audit.recorded(looker)
    assert record.action == "audit.records.searched" and f"consumer={consumer}" in record.fields


async def test_a_filter_value_shaped_like_an_identifier_is_not_recorded_in_clear(
    audit: Audit, sessions: async_sessionmaker[AsyncSession]
) -> None:
    person = synthetic_residents(6)[5].id_number
    looker = dept()
    response = await audit.client.get(
        "/v1/audit/events", params={"purpose": person}, headers=audit.token(["auditor"], dept=looker)
    )
    assert response.status_code == 200, response.text
    [row] = await by_department(sessions, looker, 1)
    assert "purpose=…withheld" in row.fields and person not in str(row.fields)

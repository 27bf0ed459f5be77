"""免提交 — evidence bundles against real PostgreSQL: the exchange fetches every government-issued
material of a service item (as ``registry.events`` told it) through its ordinary query path, with an
outcome per material, one audit record per material's query and one for the bundle that names
them; the bundle is readable afterwards by the system that asked, and only by it. A bundle refused
as a whole writes nothing but its denial's audit record."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common.contracts.audit import AuditAction
from services.common.contracts.registry import MaterialEntry, ServiceItemSnapshot
from services.common.db import session_factory
from services.common.errors import Problem
from services.common.pb import audit_pb2, exchange_pb2
from services.common.pb import registry_pb2 as pb
from services.common.security import Principal, Role
from services.exchange.config import ExchangeSettings
from services.exchange.evidence import Evidence, read_bundle
from services.exchange.messaging import apply_registry_event
from services.exchange.models import ServiceItemView
from services.exchange.schemas import EvidenceBundlePublic, EvidenceCreate, MaterialOutcome
from tests.exchange.support import (
    CLIENT,
    PURPOSE,
    RESOURCE,
    SUBJECTS,
    add_grant,
    consumer,
    provider_reply,
    publish,
    replica,
    written,
)
from tests.factories import credit_code, person, system

SERVICE_ITEM = PURPOSE  # 最低生活保障审批: its grants name it as their purpose
IMPLEMENTER = credit_code("110105")  # 民政 implements the service item
MARRIAGE = "101030/000002"  # 婚姻登记信息: published, no grant for the consumer
DISABILITY = "101040/000003"  # 残疾人证信息: granted, but its provider never answers
SILENT = credit_code("110108")


@pytest.fixture(autouse=True)
async def published(engine: AsyncEngine) -> None:
    """Besides 居民户籍信息 (conftest): two more resources, of two more providers."""
    await publish(engine, MARRIAGE, "婚姻登记信息", credit_code("110106"))
    await publish(engine, DISABILITY, "残疾人证信息", SILENT)


def material(name: str, source: str = "government", resource: str | None = None, **more: Any) -> MaterialEntry:
    return MaterialEntry(
        id=more.get("id", uuid.uuid4()),
        name=name,
        source=source,
        necessity=more.get("necessity", "required"),
        resource_code=resource,
        items=more.get("items", ["姓名", "户籍地址"] if resource else []),
    )


def changed(version: int, materials: list[MaterialEntry], *, withdrawn: bool = False) -> pb.RegistryEvent:
    snapshot = ServiceItemSnapshot(SERVICE_ITEM, "最低生活保障审批", IMPLEMENTER, version, withdrawn, materials)
    return pb.RegistryEvent(event_id=uuid.uuid4().hex, service_item_changed=snapshot.to_proto())


async def project(engine: AsyncEngine, *events: pb.RegistryEvent) -> None:
    async with session_factory(engine).begin() as session:
        for event in events:
            await apply_registry_event(session, event)


# Five materials: one the consumer may fetch, one it has no grant for, one not mapped to any
# resource, one its provider never answers, and one the applicant brings (申请人自备).
HOUSEHOLD = material("居民户口簿", resource=RESOURCE)
MARRIAGE_CERT = material("结婚证", resource=MARRIAGE)
INCOME = material("收入证明")
DISABILITY_CARD = material("残疾人证", resource=DISABILITY, necessity="conditional")
FORM = material("最低生活保障申请书", source="applicant")
FIVE = [HOUSEHOLD, MARRIAGE_CERT, INCOME, DISABILITY_CARD, FORM]


def ask(subject: str = SUBJECTS[0], **more: Any) -> EvidenceCreate:
    return EvidenceCreate.model_validate(
        {"service_item": SERVICE_ITEM, "subject": {"type": "id_card", "value": subject}, "timeout_ms": 300} | more
    )


@contextlib.asynccontextmanager
async def provider(engine: AsyncEngine, evidence: Evidence, answers: set[str]) -> AsyncIterator[None]:
    """Play the connectors of ``answers`` (resource codes): reply to each request written to the
    outbox for one of them with a value for every item asked; the others never answer."""

    async def serve() -> None:
        while True:
            async with engine.connect() as db:
                rows = (await db.execute(text("SELECT value FROM exchange.outbox WHERE topic LIKE '%requests%'"))).all()
            for (value,) in rows:
                request = exchange_pb2.ExchangeRequest.FromString(value)
                if request.resource_code in answers:
                    reply = provider_reply(request.query_id, value, {f: f"{f}的值" for f in request.fields})
                    evidence.exchange.dispatch(reply)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(serve())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def evidence_records(audits: list[audit_pb2.AuditEvent]) -> list[audit_pb2.AuditEvent]:
    return [a for a in audits if a.action == AuditAction.EXCHANGE_EVIDENCE]


def query_records(audits: list[audit_pb2.AuditEvent]) -> list[audit_pb2.AuditEvent]:
    return [a for a in audits if a.action == AuditAction.EXCHANGE_QUERY]


async def test_a_bundle_fetches_what_it_may_and_says_why_not_for_the_rest(engine: AsyncEngine) -> None:
    await project(engine, changed(1, FIVE))
    await add_grant(engine)  # 居民户籍信息 for 最低生活保障审批
    await add_grant(engine, resource_code=DISABILITY, provider_dept=SILENT)
    evidence = Evidence(replica(engine))

    async with provider(engine, evidence, {RESOURCE}):
        bundle = await evidence.bundle(consumer(), ask(), None)

    assert (bundle.materials_total, bundle.government_issued, bundle.exempt) == (5, 4, 1)
    outcomes = {m.name: m for m in bundle.materials}
    assert set(outcomes) == {"居民户口簿", "结婚证", "收入证明", "残疾人证"}  # the applicant's own form is not fetched
    household = outcomes["居民户口簿"]
    assert household.outcome == MaterialOutcome.FETCHED
    assert household.answer is not None and household.answer["data"] == {"姓名": "姓名的值", "户籍地址": "户籍地址的值"}
    problems = {name: (m.outcome, (m.problem or {}).get("type", "").rsplit("/", 1)[-1]) for name, m in outcomes.items()}
    assert problems == {
        "居民户口簿": (MaterialOutcome.FETCHED, ""),
        "结婚证": (MaterialOutcome.DENIED, "no-grant"),
        "收入证明": (MaterialOutcome.UNAVAILABLE, "material-not-mapped"),
        "残疾人证": (MaterialOutcome.UNAVAILABLE, "provider-timeout"),
    }

    queries, used, audits, requests = await written(engine)
    assert (queries, used) == (2, 2)  # the fetched one and the one that timed out
    assert sorted(r.resource_code for r in requests) == sorted([RESOURCE, DISABILITY])
    assert sorted((a.resource_code, a.outcome, a.reason) for a in query_records(audits)) == sorted(
        [(RESOURCE, "completed", ""), (MARRIAGE, "denied", "no-grant"), (DISABILITY, "timeout", "")]
    )
    # The bundle's own record names it and the queries it fetched: the tie to their records.
    [record] = evidence_records(audits)
    assert (record.outcome, record.query_id, record.purpose, record.consumer_client_id) == (
        "completed",
        str(bundle.id),
        SERVICE_ITEM,
        CLIENT,
    )
    assert list(record.fields) == [str(household.query_id)]
    assert household.query_id is not None
    assert str(household.query_id) in {a.query_id for a in query_records(audits) if a.outcome == "completed"}
    assert len({a.subject_hash for a in audits}) == 1  # one subject, never in clear
    # Every record of the bundle — each material's query, refused or not, and its own — carries
    # the bundle's id: an auditor finds them all by it (GET /v1/audit/events?bundle_id=).
    assert [a.bundle_id for a in audits] == [str(bundle.id)] * 4 and {a.batch_id for a in audits} == {""}

    # Readable afterwards by the system that asked, with the answer as its query keeps it.
    async with session_factory(engine)() as session:
        again = await read_bundle(session, consumer(), bundle.id)
        assert again.model_dump(exclude={"materials"}) == bundle.model_dump(exclude={"materials"})
        assert [(m.name, m.outcome, m.query_id) for m in again.materials] == [
            (m.name, m.outcome, m.query_id) for m in bundle.materials
        ]
        assert next(m for m in again.materials if m.name == "居民户口簿").answer == household.answer
        await assert_hidden(session, bundle.id)


async def assert_hidden(session: AsyncSession, bundle_id: uuid.UUID) -> None:
    """BOLA: another system, or a person of the same department, sees no such bundle."""
    for stranger in (system(consumer().dept), person(consumer().dept, Role.DATA_ADMIN)):
        with pytest.raises(Problem) as raised:
            await read_bundle(session, stranger, bundle_id)
        assert (raised.value.status, raised.value.code) == (404, "not-found")
    with pytest.raises(Problem) as raised:
        await read_bundle(session, consumer(), uuid.uuid4())
    assert raised.value.status == 404


@pytest.mark.parametrize(
    ("setup", "asked", "principal", "status", "code"),
    [
        ("none", ask(), consumer(), 404, "unknown-service-item"),
        ("withdrawn", ask(), consumer(), 404, "unknown-service-item"),
        (
            "published",
            ask(SUBJECTS[0][:-1] + ("0" if SUBJECTS[0][-1] != "0" else "1")),
            consumer(),
            422,
            "invalid-subject",
        ),
        ("published", ask(), person(credit_code("110102"), Role.DATA_ADMIN), 403, "not-a-consumer"),
    ],
    ids=["unknown service item", "withdrawn service item", "bad check digit", "a person"],
)
async def test_a_refused_bundle_writes_nothing_but_its_denial(
    engine: AsyncEngine, setup: str, asked: EvidenceCreate, principal: Principal, status: int, code: str
) -> None:
    if setup != "none":
        await project(engine, changed(1, FIVE))
    if setup == "withdrawn":
        await project(engine, changed(2, [], withdrawn=True))
    await add_grant(engine)

    with pytest.raises(Problem) as raised:
        await Evidence(replica(engine)).bundle(principal, asked, None)

    assert (raised.value.status, raised.value.code) == (status, code)
    queries, used, audits, requests = await written(engine)
    assert (queries, used, requests) == (0, 0, [])
    assert [(a.action, a.outcome, a.reason, a.purpose) for a in audits] == [
        (AuditAction.EXCHANGE_EVIDENCE, "denied", code, SERVICE_ITEM)
    ]
    async with engine.connect() as db:
        assert (await db.execute(text("SELECT count(*) FROM exchange.evidence_bundles"))).scalar_one() == 0


async def test_the_newest_snapshot_of_a_service_item_wins_in_any_order(engine: AsyncEngine) -> None:
    """Registry events are keyed by event id, so snapshots arrive in any order: an older one never
    replaces a newer one, nor revives a withdrawn item."""
    await project(engine, changed(2, [HOUSEHOLD, FORM]), changed(1, FIVE))
    async with session_factory(engine)() as session:
        item = await session.get(ServiceItemView, SERVICE_ITEM)
        assert item is not None and [m["name"] for m in item.materials] == ["居民户口簿", "最低生活保障申请书"]
        assert item.materials[0] == {
            "id": str(HOUSEHOLD.id),
            "name": "居民户口簿",
            "source": "government",
            "necessity": "required",
            "resource_code": RESOURCE,
            "items": ["姓名", "户籍地址"],
        }
    await project(engine, changed(4, [], withdrawn=True), changed(3, FIVE))
    async with session_factory(engine)() as session:
        item = await session.get(ServiceItemView, SERVICE_ITEM)
        assert item is not None and (item.version, item.withdrawn, item.materials) == (4, True, [])


async def test_materials_are_fetched_at_most_evidence_concurrency_at_a_time(engine: AsyncEngine) -> None:
    """Six mapped materials, none answered, a limit of two: never more than two queries wait at
    once, and every one is still asked (and times out)."""
    six = [material(f"证明{n}", resource=DISABILITY) for n in range(6)]
    await project(engine, changed(1, six))
    await add_grant(engine, resource_code=DISABILITY, provider_dept=SILENT)
    exchange = replica(engine, settings=ExchangeSettings(evidence_concurrency=2))
    evidence = Evidence(exchange)

    peak = 0
    asking = asyncio.create_task(evidence.bundle(consumer(), ask(timeout_ms=150), None))
    began = time.monotonic()
    while not asking.done():
        peak = max(peak, len(exchange.waiters))
        await asyncio.sleep(0.005)
    bundle: EvidenceBundlePublic = await asking

    assert peak == 2
    assert [m.outcome for m in bundle.materials] == [MaterialOutcome.UNAVAILABLE] * 6
    assert time.monotonic() - began >= 3 * 0.15  # three rounds of two
    queries, _, _, requests = await written(engine)
    assert (queries, len(requests)) == (6, 6)


async def test_a_retried_bundle_with_its_idempotency_key_asks_no_provider_again(engine: AsyncEngine) -> None:
    await project(engine, changed(1, [HOUSEHOLD, FORM]))
    await add_grant(engine)
    evidence = Evidence(replica(engine))

    async with provider(engine, evidence, {RESOURCE}):
        first = await evidence.bundle(consumer(), ask(), "bundle-1")
    second = await evidence.bundle(consumer(), ask(), "bundle-1")  # no provider now: a replay or nothing

    assert [m.outcome for m in second.materials] == [MaterialOutcome.FETCHED]
    assert second.materials[0].answer == first.materials[0].answer
    assert second.id != first.id  # a new bundle, over the same queries
    queries, used, _, requests = await written(engine)
    assert (queries, used, len(requests)) == (1, 1, 1)

"""授权 — grants enforced to the item, through the exchange's query path against real PostgreSQL:
the daily quota (配额) counted atomically across replicas on the platform's business day, a
revocation that no replica's cache outlives, every refusal audited with nothing else written, and
数据最小化 — the provider is asked for the granted items only, and anything more it returns is
dropped before the consumer sees it. And 答复保留期: answers (personal data) are purged after the
retention period, the outcome kept, and a replayed Idempotency-Key then gets 410. Late replies:
verified by any replica against the request sent, never lost when the provider's key is out of reach."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common import sdjwt
from services.common.clock import business_date, seconds_to_midnight
from services.common.db import session_factory
from services.common.errors import Problem
from services.common.keywrap import new_kek
from services.common.pb import audit_pb2, exchange_pb2, registry_pb2
from services.connector.service import Responder
from services.exchange import answers
from services.exchange.answers import ProviderKeys, ProviderKeysUnavailable
from services.exchange.config import ExchangeSettings
from services.exchange.messaging import apply_registry_event
from services.exchange.schemas import QueryCreate
from services.exchange.service import Exchange, ExchangeMetrics, get_query, query_view
from services.gateway.app import create_app as create_gateway
from services.gateway.config import GatewaySettings
from tests.exchange.support import (
    CLIENT,
    OTHER_PURPOSE,
    PROVIDER,
    PROVIDER_KEY,
    PURPOSE,
    RESOURCE,
    SUBJECTS,
    add_grant,
    consumer,
    provider_reply,
    replica,
    sent_request,
    written,
)

GATEWAY_PASSWORD = "Tongban-2026"  # the gateway's bootstrap administrator (test_only_an_answer_signed_…)


def body(subject: str = SUBJECTS[0], *, purpose: str = PURPOSE, fields: list[str] | None = None) -> QueryCreate:
    asked: dict[str, Any] = {
        "resource": RESOURCE,
        "purpose": purpose,
        "subject": {"type": "id_card", "value": subject},
        "timeout_ms": 200,
    }
    if fields is not None:
        asked["fields"] = fields
    return QueryCreate.model_validate(asked)


async def refused(exchange: Exchange, asked: QueryCreate, key: str | None = None) -> Problem:
    with pytest.raises(Problem) as raised:
        await exchange.query(consumer(), asked, key)
    return raised.value


async def answered(exchange: Exchange, asked: QueryCreate, key: str | None, data: dict[str, str]) -> dict[str, Any]:
    """Ask through ``exchange`` and play the provider: once the query waits for its reply, reply
    with ``data``. The consumer's answer."""
    before = set(exchange.waiters)
    asking = asyncio.create_task(exchange.query(consumer(), asked, key))
    deadline = time.monotonic() + 10
    while not (waiting := set(exchange.waiters) - before):
        assert time.monotonic() < deadline and not asking.done()
        await asyncio.sleep(0.01)
    (query_id,) = waiting
    sent = None
    while sent is None:  # the request as the exchange sent it (its outbox row), which the answer signs
        assert time.monotonic() < deadline and not asking.done()
        async with exchange.engine.connect() as db:
            sent = await db.scalar(
                text("SELECT value FROM exchange.outbox WHERE key = :key"), {"key": query_id.encode()}
            )
        await asyncio.sleep(0.01)
    request = exchange_pb2.ExchangeRequest.FromString(sent)
    request_hash = hashlib.sha256(sent).hexdigest()
    reply = exchange_pb2.ExchangeReply(
        query_id=query_id,
        provider_dept=PROVIDER,
        status=exchange_pb2.ExchangeReply.OK,
        data=data,
        request_hash=request_hash,
        key_id="k1",
        sd_jwt=Responder(PROVIDER, "k1", PROVIDER_KEY).answer_sd_jwt(request, request_hash, data),
    )
    # Even if the query is not written yet, its waiter keeps the reply until it waits for it.
    exchange.dispatch(reply)
    return await asking


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("grant", "asked", "status", "code"),
    [
        ({}, body(fields=["姓名", "银行账号"]), 422, "unknown-items"),
        ({"valid_until": datetime.now(UTC) - timedelta(minutes=1)}, body(), 403, "grant-expired"),
        ({"revoked": True}, body(), 403, "grant-revoked"),
        ({}, body(purpose=OTHER_PURPOSE), 403, "purpose-not-granted"),
        ({}, body(fields=["姓名", "出生日期"]), 403, "item-not-granted"),
        ({"daily_quota": 0}, body(), 429, "quota-exceeded"),
    ],
    ids=["items not in the catalogue", "expired", "revoked", "purpose outside the grant", "item not granted", "quota"],
)
async def test_a_refusal_writes_nothing_but_its_audit_record(
    engines: tuple[AsyncEngine, AsyncEngine], grant: dict[str, Any], asked: QueryCreate, status: int, code: str
) -> None:
    engine, _ = engines
    await add_grant(engine, **grant)

    problem = await refused(replica(engine), asked)

    assert (problem.status, problem.code) == (status, code)
    queries, used, audits, requests = await written(engine)
    assert (queries, used, requests) == (0, 0, [])
    assert [(a.outcome, a.reason, a.resource_code, a.consumer_client_id) for a in audits] == [
        ("denied", code, RESOURCE, CLIENT)
    ]


# --------------------------------------------------------------------------- quota


async def test_the_daily_quota_holds_exactly_across_two_replicas(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    """24 queries at once, half through each replica, against a quota of 5: exactly 5 are sent
    (each then waits out its deadline: no connector answers), 19 are refused with 429 and a
    Retry-After to the start of the next business day (Asia/Shanghai)."""
    quota, asked = 5, 24
    grant_id = await add_grant(engines[0], daily_quota=quota)
    replicas = [replica(engines[0]), replica(engines[1])]

    async def one(n: int) -> Problem:
        with pytest.raises(Problem) as raised:
            await replicas[n % 2].query(consumer(), body(SUBJECTS[n]), None)
        return raised.value

    began = datetime.now(UTC)
    outcomes = await asyncio.gather(*(one(n) for n in range(asked)))

    assert sorted(p.status for p in outcomes) == [429] * (asked - quota) + [504] * quota
    over = [p for p in outcomes if p.status == 429]
    assert {p.code for p in over} == {"quota-exceeded"}
    renews_in = seconds_to_midnight(ExchangeSettings().zone, began)
    assert all(renews_in - 10 <= int(p.headers["Retry-After"]) <= renews_in for p in over)
    queries, used, audits, requests = await written(engines[0])
    assert (queries, used, len(requests)) == (quota, quota, quota)
    assert sorted((a.outcome, a.reason) for a in audits) == sorted(
        [("denied", "quota-exceeded")] * (asked - quota) + [("timeout", "")] * quota
    )
    async with engines[1].connect() as db:
        day = (
            await db.execute(text("SELECT day FROM exchange.grant_usage WHERE grant_id = :g"), {"g": grant_id})
        ).scalar_one()
    assert day == business_date(ExchangeSettings().zone, began)


# --------------------------------------------------------------------------- revocation


async def test_a_revocation_bites_on_a_replica_that_cached_the_grant(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    """Replica A cached the grant; the revocation is applied by replica B's registry consumer, and
    A is never told to forget: its next query is refused all the same, and writes nothing."""
    a_engine, b_engine = engines
    grant_id = await add_grant(a_engine)
    a = replica(a_engine)
    assert (await refused(a, body(SUBJECTS[0]))).status == 504  # sent: no connector, so a timeout
    assert a._grants, "the grant is cached on replica A"

    async with session_factory(b_engine).begin() as session:
        await apply_registry_event(
            session,
            registry_pb2.RegistryEvent(
                event_id="revoke-1",
                grant_revoked=registry_pb2.GrantRevoked(grant_id=str(grant_id), reason="用途已结束"),
            ),
        )

    problem = await refused(a, body(SUBJECTS[1]))
    assert (problem.status, problem.code) == (403, "grant-revoked")
    queries, used, audits, _ = await written(a_engine)
    assert (queries, used) == (1, 1)
    assert [(x.outcome, x.reason) for x in audits if x.outcome == "denied"] == [("denied", "grant-revoked")]


async def test_a_revoked_grant_for_the_purpose_is_reported_before_another_purposes_grant(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, _ = engines
    await add_grant(engine, revoked=True)
    await add_grant(engine, purpose=OTHER_PURPOSE)

    assert (await refused(replica(engine), body())).code == "grant-revoked"


# --------------------------------------------------------------------------- data minimisation


@pytest.mark.parametrize(
    ("asked", "sent"),
    [(None, ["姓名", "户籍地址"]), (["户籍地址"], ["户籍地址"])],
    ids=["none named: every granted item", "one named: that one"],
)
async def test_the_provider_is_asked_for_granted_items_only(
    engines: tuple[AsyncEngine, AsyncEngine], asked: list[str] | None, sent: list[str]
) -> None:
    engine, _ = engines
    # The grant names an item the resource no longer catalogues (a newer version dropped it).
    await add_grant(engine, items=["姓名", "曾用名", "户籍地址"])

    await refused(replica(engine), body(fields=asked))

    _, _, _, requests = await written(engine)
    assert [list(r.fields) for r in requests] == [sent]


async def test_items_the_provider_was_not_asked_for_are_dropped_and_counted(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, _ = engines
    await add_grant(engine)
    registry = CollectorRegistry()
    exchange = replica(engine, ExchangeMetrics(registry))

    answer = await answered(
        exchange, body(fields=["姓名"]), None, {"姓名": "张三", "户籍地址": "北京市", "公民身份号码": SUBJECTS[0]}
    )

    assert answer["data"] == {"姓名": "张三"}
    dropped = registry.get_sample_value("tongban_exchange_extra_items_dropped_total", {"provider": PROVIDER})
    assert dropped == 2


# --------------------------------------------------------------------------- answer retention


async def test_answers_past_their_retention_are_purged_in_batches_and_a_replay_gets_410(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    engine, _ = engines
    await add_grant(engine)
    settings = ExchangeSettings().model_copy(update={"answer_retention_s": 3600.0, "answer_purge_batch": 2})
    exchange = replica(engine, settings=settings)
    for n in range(6):
        await answered(exchange, body(SUBJECTS[n]), f"key-{n}", {"姓名": f"居民{n}", "户籍地址": "北京市"})
    async with engine.begin() as db:  # five of them were asked two hours ago
        await db.execute(
            text("UPDATE exchange.queries SET created_at = now() - interval '2 hours' WHERE idempotency_key <> 'key-5'")
        )

    assert await exchange.purge_answers() == 5  # in batches of two: 2, 2, 1
    assert await exchange.purge_answers() == 0

    async with engine.connect() as db:
        rows = (
            await db.execute(
                text(
                    "SELECT idempotency_key, status, http_status, response IS NULL, answer_purged_at IS NOT NULL "
                    "FROM exchange.queries ORDER BY idempotency_key"
                )
            )
        ).all()
    # The outcome stays; only the answer (personal data) is gone.
    assert [tuple(r) for r in rows] == [(f"key-{n}", "completed", 200, n < 5, n < 5) for n in range(6)]
    async with session_factory(engine)() as session:
        purged_id = (
            await session.execute(text("SELECT id FROM exchange.queries WHERE idempotency_key = 'key-0'"))
        ).scalar_one()
        view = query_view(await get_query(session, consumer(), purged_id))
    assert view["status"] == "completed" and "data" not in view and view["answer_purged_at"]
    queries, used, audits, requests = await written(engine)

    problem = await refused(exchange, body(SUBJECTS[0]), "key-0")

    assert (problem.status, problem.code) == (410, "answer-purged")
    assert await written(engine) == (queries, used, audits, requests)  # nothing asked again
    kept = await exchange.query(consumer(), body(SUBJECTS[5]), "key-5")
    assert kept["data"] == {"姓名": "居民5", "户籍地址": "北京市"}


async def test_a_reply_later_than_the_retention_is_not_kept(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    engine, _ = engines
    await add_grant(engine)
    exchange = replica(engine, settings=ExchangeSettings().model_copy(update={"answer_retention_s": 60.0}))
    timed_out = await refused(exchange, body())  # no connector: a timeout
    query_id = timed_out.body()["query_id"]
    async with engine.begin() as db:
        await db.execute(text("UPDATE exchange.queries SET created_at = now() - interval '2 minutes'"))
    assert await exchange.purge_answers() == 1

    late = exchange_pb2.ExchangeReply(
        query_id=query_id, provider_dept=PROVIDER, status=exchange_pb2.ExchangeReply.OK, data={"姓名": "张三"}
    )
    assert await exchange.record_late_replies([late]) == []

    async with engine.connect() as db:
        row = (await db.execute(text("SELECT status, response FROM exchange.queries"))).one()
    assert tuple(row) == ("timeout", None)


# --------------------------------------------------------------------------- late replies


async def query_row(engine: AsyncEngine, query_id: str) -> tuple[str, int, dict[str, Any] | None]:
    async with engine.connect() as db:
        row = (
            await db.execute(
                text("SELECT status, http_status, response FROM exchange.queries WHERE id = :id"), {"id": query_id}
            )
        ).one()
    return row[0], row[1], row[2]


async def test_a_late_reply_is_verified_by_a_replica_that_did_not_send_the_query(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """The request hash is kept with the query: the replica recording a late reply (any of them)
    verifies the answer against the request actually sent, not the hash the reply claims."""
    first, second = engines
    await add_grant(first)
    sender, recorder = replica(first), replica(second)
    answered_late = (await refused(sender, body(SUBJECTS[0]))).body()["query_id"]
    forged = (await refused(sender, body(SUBJECTS[1]))).body()["query_id"]
    data = {"姓名": "居民0", "户籍地址": "北京市"}

    good = provider_reply(answered_late, await sent_request(first, answered_late), data)
    # A reply signed over another request (here: another subject's), whose claimed hash matches
    # its own signature: only the hash kept with the query shows it answers something else.
    other = exchange_pb2.ExchangeRequest.FromString(await sent_request(first, forged))
    other.subject_value = SUBJECTS[2]
    bad = provider_reply(forged, other.SerializeToString(), data)

    assert sorted(await recorder.record_late_replies([good, bad])) == sorted([answered_late, forged])

    status, http_status, response = await query_row(first, answered_late)
    assert (status, http_status) == ("late_reply", 200)
    assert response is not None and response["data"] == data and response["disclosed"] == ["姓名", "户籍地址"]
    status, http_status, response = await query_row(first, forged)
    assert (status, http_status) == ("provider_error", 502)
    assert response is not None and response["type"].endswith("/unverifiable-answer") and "data" not in response
    _, _, audits, _ = await written(first)
    late = {a.query_id: (a.outcome, a.reason) for a in audits if a.outcome == "late_reply"}
    assert late == {answered_late: ("late_reply", "completed"), forged: ("late_reply", "provider_error")}


def unreachable_keys(served: list[dict[str, Any] | None]) -> httpx.AsyncClient:
    """An HTTP client to the provider's JWKS: ``served[0]`` is the JWKS, or None while it is down."""

    def handler(request: httpx.Request) -> httpx.Response:
        jwks = served[0]
        return httpx.Response(503) if jwks is None else httpx.Response(200, json=jwks)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_a_late_reply_whose_key_cannot_be_fetched_is_not_lost(
    engines: tuple[AsyncEngine, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider's JWKS out of reach and the answer's key not known yet: nothing is recorded
    and the handler fails (the bus retries the reply, then dead-letters it with the reason); once
    the key can be fetched, the same reply is recorded."""
    monkeypatch.setattr(answers, "REFETCH_AFTER_S", 0.01)
    engine, _ = engines
    await add_grant(engine)
    served: list[dict[str, Any] | None] = [None]
    async with unreachable_keys(served) as client:
        settings = ExchangeSettings()
        exchange = replica(engine)
        exchange.provider_keys = ProviderKeys(settings, client)
        query_id = (await refused(exchange, body())).body()["query_id"]
        reply = provider_reply(query_id, await sent_request(engine, query_id), {"姓名": "居民0"})
        before = await written(engine)

        with pytest.raises(ProviderKeysUnavailable, match=PROVIDER):
            await exchange.record_late_replies([reply])
        assert await written(engine) == before
        assert (await query_row(engine, query_id))[0] == "timeout"

        served[0] = {"keys": [sdjwt.public_jwk(PROVIDER_KEY.public_key(), "k1")]}
        await asyncio.sleep(0.02)
        assert await exchange.record_late_replies([reply]) == [query_id]
    assert (await query_row(engine, query_id))[:2] == ("late_reply", 200)


async def test_an_answer_whose_key_cannot_be_fetched_in_time_is_handed_to_the_late_reply_path(
    engines: tuple[AsyncEngine, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On time, but not verifiable yet (the key unknown, the JWKS out of reach): the consumer is
    told 504 with the query's id, and the reply is published again with the query's close, for
    the late-reply path to verify and record once the key can be fetched."""
    monkeypatch.setattr(answers, "REFETCH_AFTER_S", 0.01)
    engine, _ = engines
    await add_grant(engine)
    served: list[dict[str, Any] | None] = [None]
    async with unreachable_keys(served) as client:
        exchange = replica(engine)
        exchange.provider_keys = ProviderKeys(ExchangeSettings(), client)
        asked = body().model_copy(update={"timeout_ms": 5000})
        problem = await refused_while_answered(exchange, asked, {"姓名": "居民0", "户籍地址": "北京市"})
        assert (problem.status, problem.code) == (504, "provider-timeout")
        query_id = problem.body()["query_id"]
        assert (await query_row(engine, query_id))[:2] == ("timeout", 504)
        async with engine.connect() as db:
            again = await db.scalar(
                text("SELECT value FROM exchange.outbox WHERE key = :key AND topic LIKE '%exchange.replies'"),
                {"key": query_id.encode()},
            )
        assert again is not None, "the reply was not kept for the late-reply path"
        reply = exchange_pb2.ExchangeReply.FromString(again)
        assert reply.deadline_unix_ms <= time.time() * 1000  # the late-reply consumer takes it up

        served[0] = {"keys": [sdjwt.public_jwk(PROVIDER_KEY.public_key(), "k1")]}
        await asyncio.sleep(0.02)
        assert await exchange.record_late_replies([reply]) == [query_id]
    status, http_status, response = await query_row(engine, query_id)
    assert (status, http_status) == ("late_reply", 200)
    assert response is not None and response["data"] == {"姓名": "居民0", "户籍地址": "北京市"}
    _, _, audits, _ = await written(engine)
    assert [(a.outcome, a.reason) for a in audits if a.query_id == query_id] == [
        ("timeout", ""),
        ("late_reply", "completed"),
    ]


async def refused_while_answered(exchange: Exchange, asked: QueryCreate, data: dict[str, str]) -> Problem:
    """:func:`answered`, for an answer the consumer does not get: the problem raised."""
    with pytest.raises(Problem) as raised:
        await answered(exchange, asked, None, data)
    return raised.value


async def test_a_late_reply_to_a_query_left_pending_records_its_timeout_first(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """A reply past the deadline of a query still pending (its waiter died with its replica, or is
    at the deadline itself): the replica recording it records the timeout first, so the query's
    audit chain is (timeout, late_reply) as for every late reply, both on one partition in order."""
    first, second = engines
    await add_grant(first)
    sender, recorder = replica(first), replica(second)
    asking = asyncio.create_task(sender.query(consumer(), body().model_copy(update={"timeout_ms": 5000}), None))
    deadline = time.monotonic() + 10
    while not sender.waiters:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    (query_id,) = sender.waiters
    while (sent := await sent_request(first, query_id)) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    asking.cancel()  # the waiting replica dies: the query stays pending
    with pytest.raises(asyncio.CancelledError):
        await asking
    async with first.begin() as db:
        await db.execute(text("UPDATE exchange.queries SET deadline = now() - interval '1 second'"))

    reply = provider_reply(query_id, sent, {"姓名": "居民0", "户籍地址": "北京市"})
    assert await recorder.record_late_replies([reply]) == [query_id]

    assert (await query_row(first, query_id))[:2] == ("late_reply", 200)
    async with first.connect() as db:
        rows = (await db.execute(text("SELECT key, value FROM exchange.outbox WHERE topic LIKE '%audit.events'"))).all()
    events = [(key, audit_pb2.AuditEvent.FromString(value)) for key, value in rows]
    # Rows of one transaction have no order in the table; one key puts them on one partition, in
    # the order they were emitted (timeout first).
    assert sorted((e.outcome, e.reason) for _, e in events) == [("late_reply", "completed"), ("timeout", "")]
    assert {key for key, _ in events} == {query_id.encode()}


# --------------------------------------------------------------------------- subject key ids


async def test_late_and_abandoned_events_name_the_subject_key_of_the_query_even_after_a_rotation(
    engines: tuple[AsyncEngine, AsyncEngine],
) -> None:
    """The events made after the request has gone (a late reply, a query its replica abandoned)
    carry the id of the key that hashed the subject when the query was asked, not an empty one,
    and not today's key after a rotation: the auditor's search names the key of each record."""
    engine, _ = engines
    await add_grant(engine)
    first = ExchangeSettings().model_copy(update={"subject_hash_key_id": "k-old", "abandoned_after_s": 1.0})
    exchange = replica(engine, settings=first)
    timed_out = await refused(exchange, body(SUBJECTS[0]))  # no connector: a timeout
    assert timed_out.status == 504
    # The replica that asked the second query died while it waited: the row stays pending.
    async with engine.begin() as db:
        abandoned_id = uuid.uuid4()
        await db.execute(
            text(
                "INSERT INTO exchange.queries (id, client_id, consumer_dept, actor, fingerprint, resource_code, "
                "provider_dept, grant_id, purpose, subject_type, subject_hash, fields, status, deadline, "
                "subject_key_id) SELECT :id, client_id, consumer_dept, actor, 'f', resource_code, provider_dept, "
                "grant_id, purpose, subject_type, subject_hash, fields, 'pending', now() - interval '1 minute', "
                "subject_key_id FROM exchange.queries"
            ),
            {"id": abandoned_id},
        )
    rotated = replica(engine, settings=first.model_copy(update={"subject_hash_key_id": "k-new"}))
    query_id = timed_out.body()["query_id"]
    late = provider_reply(query_id, await sent_request(engine, query_id), {"姓名": "张三"})
    assert await rotated.record_late_replies([late]) == [query_id]
    assert await rotated.close_abandoned() == 1

    _, _, audits, _ = await written(engine)
    by_outcome = {(e.outcome, e.reason): e for e in audits}
    assert set(by_outcome) == {("timeout", ""), ("late_reply", "completed"), ("timeout", "abandoned")}
    assert {e.subject_key_id for e in audits} == {"k-old"}
    assert all(e.subject_hash for e in audits)


# --------------------------------------------------------------------------- keys registered at the gateway


@pytest.fixture
async def gateway(database: str) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway (its lifespan on the test's database) where 公安局's data administrator has
    registered a provider system with the connector's key ``k1``: the registry of answer keys."""
    settings = GatewaySettings(
        database_url=database, bus="memory", bootstrap_admin_password=GATEWAY_PASSWORD, key_encryption_key=new_kek()
    )
    app = create_gateway(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            login = await client.post("/v1/auth/login", json={"username": "admin", "password": GATEWAY_PASSWORD})
            admin = {"authorization": f"Bearer {login.json()['access_token']}"}
            department = {"code": PROVIDER, "name": "市公安局", "region_code": "110101", "level": "city"}
            assert (await client.post("/v1/departments", json=department, headers=admin)).status_code == 201
            system = await client.post(
                f"/v1/departments/{PROVIDER}/systems", json={"name": "户籍前置机", "roles": ["provider"]}, headers=admin
            )
            registered = await client.put(
                f"/v1/systems/{system.json()['client_id']}/answer-keys",
                json={"jwks": {"keys": [sdjwt.public_jwk(PROVIDER_KEY.public_key(), "k1")]}},
                headers=admin,
            )
            assert registered.status_code == 200, registered.text
            yield client


async def test_only_an_answer_signed_with_a_key_registered_at_the_gateway_is_accepted(
    engines: tuple[AsyncEngine, AsyncEngine], gateway: httpx.AsyncClient
) -> None:
    """The provider's keys come from the gateway's registry of its systems, not from the
    connector: a key the connector holds but nobody registered signs nothing the exchange accepts,
    and the query is not recorded as answered; the registered key's answer is accepted."""
    engine, _ = engines
    await add_grant(engine)
    exchange = replica(engine)
    exchange.provider_keys = ProviderKeys(ExchangeSettings(gateway_url="http://gateway.test"), gateway)
    data = {"姓名": "居民0", "户籍地址": "北京市"}
    unregistered = Ed25519PrivateKey.generate()
    timed_out = []
    for kid in ("k2", "k1"):  # a kid the gateway does not know, and the registered kid with another key
        query_id = (await refused(exchange, body())).body()["query_id"]
        reply = provider_reply(query_id, await sent_request(engine, query_id), data, kid=kid, key=unregistered)
        assert await exchange.record_late_replies([reply]) == [query_id]
        status, http_status, response = await query_row(engine, query_id)
        assert (status, http_status) == ("provider_error", 502)
        assert response is not None and response["type"].endswith("/unverifiable-answer") and "data" not in response
        timed_out.append(query_id)

    query_id = (await refused(exchange, body())).body()["query_id"]
    reply = provider_reply(query_id, await sent_request(engine, query_id), data)
    assert await exchange.record_late_replies([reply]) == [query_id]
    status, http_status, response = await query_row(engine, query_id)
    assert (status, http_status) == ("late_reply", 200)
    assert response is not None and response["data"] == data
    _, _, audits, _ = await written(engine)
    answered_ok = {a.query_id for a in audits if a.outcome == "late_reply" and a.reason == "completed"}
    assert answered_ok == {query_id}  # neither unregistered answer is recorded as answered
    # What consumers are given to verify with is the gateway's registration too.
    assert set(await exchange.provider_keys.keys(PROVIDER, reply.sd_jwt)) == {"k1"}

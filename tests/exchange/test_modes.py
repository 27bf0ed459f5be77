"""查询方式 — async and batch queries, and provider errors, through the exchange's query path
against real PostgreSQL: an async query is accepted at once and ends in the background exactly as
a sync one does (same dedup, grant checks, quota and audit); its outcome is POSTed, signed, to the
system's registered https callback URL — a real local HTTPS server with a CA made at test time,
which refuses the first attempts — retried with backoff from the queue in PostgreSQL. A batch is
one query per subject with an outcome each, quota counted per subject; a batch over the limit and
a callback URL not https or not registered are refused, writing nothing but the denial's audit."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.exceptions import InvalidSignature
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import create_engine, session_factory
from services.common.errors import Problem
from services.common.keywrap import KeyWrap, new_kek
from services.common.pb import audit_pb2, exchange_pb2
from services.exchange import callbacks
from services.exchange.config import ExchangeSettings
from services.exchange.models import Query
from services.exchange.schemas import BatchCreate, QueryCreate
from services.exchange.service import Exchange, ExchangeMetrics, get_query, query_view
from tests.exchange import support
from tests.exchange.callback_server import hook_server, verify_detached
from tests.exchange.support import (
    CLIENT,
    PROVIDER,
    PURPOSE,
    RESOURCE,
    SUBJECTS,
    add_grant,
    consumer,
    provider_reply,
    sent_request,
)
from tests.gateway.tls import make_pki

BAD_CHECK_DIGIT = SUBJECTS[0][:-1] + ("0" if SUBJECTS[0][-1] != "0" else "1")


def replica(engine: AsyncEngine, settings: ExchangeSettings | None = None) -> Exchange:
    """The tier's replica (support.replica) with callbacks enabled and metrics of its own."""
    return support.replica(engine, ExchangeMetrics(CollectorRegistry()), settings, callbacks=True)


def ask(subject: str = SUBJECTS[0], **more: Any) -> QueryCreate:
    return QueryCreate.model_validate(
        {"resource": RESOURCE, "purpose": PURPOSE, "subject": {"type": "id_card", "value": subject}} | more
    )


def batch(subjects: list[str], **more: Any) -> BatchCreate:
    return BatchCreate.model_validate(
        {"resource": RESOURCE, "purpose": PURPOSE, "subjects": [{"type": "id_card", "value": s} for s in subjects]}
        | more
    )


async def written(engine: AsyncEngine) -> tuple[int, int, list[audit_pb2.AuditEvent], int, int]:
    """(queries, quota used, audit events, provider requests, callback rows) written."""
    async with engine.connect() as db:
        queries = (await db.execute(text("SELECT count(*) FROM exchange.queries"))).scalar_one()
        used = (await db.execute(text("SELECT coalesce(sum(used), 0) FROM exchange.grant_usage"))).scalar_one()
        rows = (await db.execute(text("SELECT topic, value FROM exchange.outbox"))).all()
        calls = (await db.execute(text("SELECT count(*) FROM exchange.callbacks"))).scalar_one()
    audits = [audit_pb2.AuditEvent.FromString(v) for t, v in rows if t.endswith("audit.events")]
    return queries, used, audits, len(rows) - len(audits), calls


async def reply_to(engine: AsyncEngine, query_id: uuid.UUID | str) -> exchange_pb2.ExchangeReply:
    """The provider's answer to the request the exchange sent for ``query_id``: an SD-JWT."""
    sent = await sent_request(engine, str(query_id))
    return provider_reply(str(query_id), sent, {"姓名": "张三", "户籍地址": "北京市"})


def error_reply(query_id: uuid.UUID | str, error: str) -> exchange_pb2.ExchangeReply:
    return exchange_pb2.ExchangeReply(
        query_id=str(query_id), provider_dept=PROVIDER, status=exchange_pb2.ExchangeReply.ERROR, error=error
    )


async def settled(exchange: Exchange) -> None:
    """Every async query of ``exchange`` has finished its background step."""
    if exchange.background:
        await asyncio.wait(set(exchange.background), timeout=10)


async def read(engine: AsyncEngine, query_id: uuid.UUID) -> dict[str, Any]:
    async with session_factory(engine)() as session:
        return query_view(await get_query(session, consumer(), query_id))


# --------------------------------------------------------------------------- async


async def test_an_async_query_is_accepted_at_once_and_ends_as_a_sync_one_does(engine: AsyncEngine) -> None:
    await add_grant(engine)
    exchange = replica(engine)

    query_id = await exchange.submit(consumer(), ask(mode="async", timeout_ms=5000), "async-1")

    assert (await read(engine, query_id))["status"] == "pending"
    exchange.dispatch(await reply_to(engine, query_id))
    await settled(exchange)
    view = await read(engine, query_id)
    assert view["status"] == "completed" and view["data"] == {"姓名": "张三", "户籍地址": "北京市"}
    queries, used, audits, requests, calls = await written(engine)
    assert (queries, used, requests, calls) == (1, 1, 1, 0)
    assert [(a.outcome, a.query_id) for a in audits] == [("completed", str(query_id))]

    # The same key and question: the same query, nothing asked again; another question: refused.
    assert await exchange.submit(consumer(), ask(mode="async"), "async-1") == query_id
    with pytest.raises(Problem) as reused:
        await exchange.submit(consumer(), ask(SUBJECTS[1], mode="async"), "async-1")
    assert reused.value.code == "idempotency-key-reused"
    assert (await written(engine))[:2] == (1, 1)


async def test_an_async_query_without_a_reply_times_out_in_the_background(engine: AsyncEngine) -> None:
    await add_grant(engine)
    exchange = replica(engine)

    query_id = await exchange.submit(consumer(), ask(mode="async", timeout_ms=200), None)
    await settled(exchange)

    view = await read(engine, query_id)
    assert view["status"] == "timeout" and view["type"].endswith("/provider-timeout")
    assert [a.outcome for a in (await written(engine))[2]] == ["timeout"]


@pytest.mark.parametrize(
    ("grant", "asked", "status", "code"),
    [
        ({}, {"subject": BAD_CHECK_DIGIT}, 422, "invalid-subject"),
        ({"revoked": True}, {}, 403, "grant-revoked"),
        ({"daily_quota": 0}, {}, 429, "quota-exceeded"),
    ],
    ids=["bad check digit", "revoked grant", "quota"],
)
async def test_an_async_query_is_refused_at_once_by_the_same_checks_as_a_sync_one(
    engine: AsyncEngine, grant: dict[str, Any], asked: dict[str, Any], status: int, code: str
) -> None:
    await add_grant(engine, **grant)
    exchange = replica(engine)

    with pytest.raises(Problem) as raised:
        await exchange.submit(consumer(), ask(**{"subject": SUBJECTS[0], "mode": "async"} | asked), None)

    assert (raised.value.status, raised.value.code) == (status, code)
    queries, used, audits, requests, _ = await written(engine)
    assert (queries, used, requests) == (0, 0, 0)
    assert [(a.outcome, a.reason) for a in audits] == [("denied", code)]
    assert not exchange.waiters and not exchange.background


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://consumer.example.gov.cn/hook", "callback-url-not-https"),
        ("https://user:pw@consumer.example.gov.cn/hook", "callback-url-not-https"),
        ("https://elsewhere.example.com/hook", "callback-url-not-registered"),
    ],
    ids=["plain http", "credentials in the URL", "not the registered one"],
)
async def test_a_bad_callback_url_is_refused_writing_nothing_but_the_denial(
    engine: AsyncEngine, url: str, code: str
) -> None:
    await add_grant(engine)
    async with session_factory(engine).begin() as session:
        await callbacks.register_url(session, consumer(), "https://consumer.example.gov.cn/hook")
    exchange = replica(engine)

    with pytest.raises(Problem) as raised:
        await exchange.submit(consumer(), ask(mode="async", callback_url=url), None)

    assert (raised.value.status, raised.value.code) == (422, code)
    queries, used, audits, requests, calls = await written(engine)
    assert (queries, used, requests, calls) == (0, 0, 0, 0)
    assert [(a.outcome, a.reason) for a in audits] == [("denied", code)]
    assert not exchange.waiters


async def test_registering_a_callback_url_takes_https_only(engine: AsyncEngine) -> None:
    async with session_factory(engine).begin() as session:
        with pytest.raises(Problem) as raised:
            await callbacks.register_url(session, consumer(), "http://consumer.example.gov.cn/hook")
    assert raised.value.code == "callback-url-not-https"
    async with session_factory(engine)() as session:
        assert await callbacks.registered_url(session, consumer()) is None


# --------------------------------------------------------------------------- batch


async def test_a_batch_is_one_query_per_subject_with_an_outcome_each_and_quota_per_subject(
    engine: AsyncEngine,
) -> None:
    """Four subjects, one with a bad check digit, under a quota of two: the bad one is refused
    (invalid-subject), two are sent (each its own query, audit record and quota count; no
    connector: each times out), the fourth is over the quota (429)."""
    await add_grant(engine, daily_quota=2)
    exchange = replica(engine)

    answer = await exchange.batch(consumer(), batch([BAD_CHECK_DIGIT, *SUBJECTS[1:4]], timeout_ms=200), "b-1")

    outcomes = answer["outcomes"]
    assert [o["index"] for o in outcomes] == [0, 1, 2, 3]
    assert outcomes[0]["status"] == 422 and outcomes[0]["problem"]["type"].endswith("/invalid-subject")
    assert sorted(o["status"] for o in outcomes[1:]) == [429, 504, 504]
    queries, used, audits, requests, _ = await written(engine)
    assert (queries, used, requests) == (2, 2, 2)
    assert sorted((a.outcome, a.reason) for a in audits) == [
        ("denied", "invalid-subject"),
        ("denied", "quota-exceeded"),
        ("timeout", ""),
        ("timeout", ""),
    ]
    async with engine.connect() as db:
        rows = (await db.execute(text("SELECT batch_id, idempotency_key FROM exchange.queries"))).all()
    assert {str(r.batch_id) for r in rows} == {answer["batch_id"]}
    assert {r.idempotency_key for r in rows} <= {"b-1#1", "b-1#2", "b-1#3"}
    # Every subject's record, refused or sent, names the batch (an auditor's batch_id filter).
    assert [a.batch_id for a in audits] == [answer["batch_id"]] * 4 and {a.bundle_id for a in audits} == {""}

    # The same batch again with the same key: every subject's earlier outcome, nothing sent again.
    again = await exchange.batch(consumer(), batch([BAD_CHECK_DIGIT, *SUBJECTS[1:4]], timeout_ms=200), "b-1")
    replayed = [o for o in again["outcomes"] if o["status"] == 504]
    assert len(replayed) == 2 and (await written(engine))[:2] == (2, 2)


async def test_a_batch_without_its_database_answers_503_per_subject_and_writes_nothing(engine: AsyncEngine) -> None:
    """A replica whose database refuses connections (nothing listens where it points): nothing is
    written, so each subject's outcome is 503 database-unavailable (retry), not a 500 for the batch."""
    await add_grant(engine)
    # Port 9 (discard) on the loopback: nothing listens there, every connection is refused.
    nowhere = engine.url.set(host="127.0.0.1", port=9, query={}).render_as_string(hide_password=False)
    unreachable = create_engine(nowhere, pool_size=2)
    try:
        answer = await replica(unreachable).batch(consumer(), batch(SUBJECTS[:2], timeout_ms=200), None)
    finally:
        await unreachable.dispose()

    assert [(o["status"], o["problem"]["type"].rsplit("/", 1)[-1]) for o in answer["outcomes"]] == [
        (503, "database-unavailable")
    ] * 2
    queries, used, audits, requests, _ = await written(engine)
    assert (queries, used, audits, requests) == (0, 0, [], 0)


async def test_an_async_batch_answers_every_subjects_query_id_at_once(engine: AsyncEngine) -> None:
    await add_grant(engine)
    exchange = replica(engine)

    answer = await exchange.batch(consumer(), batch(SUBJECTS[:3], mode="async", timeout_ms=5000), None)

    ids = [uuid.UUID(o["id"]) for o in answer["outcomes"]]
    assert [o["status"] for o in answer["outcomes"]] == [202, 202, 202] and len(set(ids)) == 3
    for query_id in ids:
        exchange.dispatch(await reply_to(engine, query_id))
    await settled(exchange)
    assert [(await read(engine, i))["status"] for i in ids] == ["completed"] * 3


async def test_a_batch_over_the_limit_is_refused_writing_nothing_but_the_denial(engine: AsyncEngine) -> None:
    await add_grant(engine)
    exchange = replica(engine, ExchangeSettings().model_copy(update={"batch_max_subjects": 3}))

    with pytest.raises(Problem) as raised:
        await exchange.batch(consumer(), batch(SUBJECTS[:4], timeout_ms=200), None)

    assert (raised.value.status, raised.value.code) == (422, "batch-too-large")
    queries, used, audits, requests, _ = await written(engine)
    assert (queries, used, requests) == (0, 0, 0)
    assert [(a.outcome, a.reason, a.consumer_client_id) for a in audits] == [("denied", "batch-too-large", CLIENT)]


# --------------------------------------------------------------------------- provider errors


async def test_a_provider_error_is_502_carrying_the_providers_code(engine: AsyncEngine) -> None:
    await add_grant(engine)
    exchange = replica(engine)
    query_id = await exchange.submit(consumer(), ask(mode="async", timeout_ms=5000), None)

    exchange.dispatch(error_reply(query_id, "backend_timeout: no answer within 5 s"))
    await settled(exchange)

    view = await read(engine, query_id)
    assert view["status"] == "provider_error" and view["type"].endswith("/provider-error")
    assert view["provider_code"] == "backend_timeout"
    async with session_factory(engine)() as session:
        query = await session.get(Query, query_id)
    assert query is not None and query.http_status == 502


# --------------------------------------------------------------------------- callbacks


async def callback_state(engine: AsyncEngine) -> str | None:
    async with engine.connect() as db:
        state: str | None = (await db.execute(text("SELECT state FROM exchange.callbacks"))).scalar_one_or_none()
    return state


async def test_a_callback_is_signed_and_retried_with_backoff_until_delivered(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The hook refuses twice; the third attempt lands. The queue is PostgreSQL's: the sender
    made after the query ended (as after a restart) finds it there."""
    pki = make_pki(tmp_path)
    await add_grant(engine)
    settings = ExchangeSettings().model_copy(
        update={"callback_backoff_s": 0.1, "callback_poll_s": 0.05, "callback_ca_file": str(pki.ca.cert)}
    )
    async with hook_server(pki, refuse=2) as hook:
        async with session_factory(engine).begin() as session:
            await callbacks.register_url(session, consumer(), hook.url)
        exchange = replica(engine, settings)
        query_id = await exchange.submit(consumer(), ask(mode="async", callback_url=hook.url), None)
        exchange.dispatch(await reply_to(engine, query_id))
        await settled(exchange)

        registry = CollectorRegistry()
        signer = await callbacks.load_signer(session_factory(engine), KeyWrap(new_kek()))
        sender = callbacks.CallbackSender(
            settings, session_factory(engine), signer, asyncio.Event(), callbacks.CallbackMetrics(registry)
        )
        running = asyncio.create_task(sender.run())
        try:
            deadline = time.monotonic() + 20
            while await callback_state(engine) != "delivered":  # the sender records after the POST
                assert time.monotonic() < deadline, hook.received
                await asyncio.sleep(0.05)
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            await sender.close()

    assert [h["tongban-attempt"] for h, _ in hook.received] == ["1", "2", "3"]
    headers, body = hook.received[-1]
    header = verify_detached(signer.jwks(), headers["tongban-signature"], body)
    assert header["alg"] == "Ed25519" and header["kid"] == signer.key_id
    answer = orjson.loads(body)
    assert answer["id"] == str(query_id) == headers["tongban-query-id"]
    assert answer["status"] == "completed" and answer["data"] == {"姓名": "张三", "户籍地址": "北京市"}
    with pytest.raises(InvalidSignature):  # a body changed in transit does not verify
        verify_detached(signer.jwks(), headers["tongban-signature"], body.replace("张三".encode(), "李四".encode()))
    async with engine.connect() as db:
        row = (await db.execute(text("SELECT state, attempts, delivered_at IS NOT NULL FROM exchange.callbacks"))).one()
    assert tuple(row) == ("delivered", 3, True)
    assert registry.get_sample_value("tongban_exchange_callback_attempts_total", {"outcome": "retry"}) == 2
    assert registry.get_sample_value("tongban_exchange_callback_attempts_total", {"outcome": "delivered"}) == 1


async def test_a_callback_that_keeps_failing_is_marked_failed_after_the_last_attempt(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path)
    await add_grant(engine)
    settings = ExchangeSettings().model_copy(
        update={
            "callback_backoff_s": 0.05,
            "callback_backoff_max_s": 0.1,
            "callback_max_attempts": 3,
            "callback_poll_s": 0.05,
            "callback_ca_file": str(pki.ca.cert),
        }
    )
    assert [callbacks.backoff_s(settings, n) for n in (1, 2, 3)] == [0.05, 0.1, 0.1]  # doubled, capped
    async with hook_server(pki, refuse=100) as hook:
        async with session_factory(engine).begin() as session:
            await callbacks.register_url(session, consumer(), hook.url)
        exchange = replica(engine, settings)
        query_id = await exchange.submit(consumer(), ask(mode="async", callback_url=hook.url, timeout_ms=200), None)
        await settled(exchange)  # no reply: the outcome is a timeout, and that is called back too

        registry = CollectorRegistry()
        signer = await callbacks.load_signer(session_factory(engine), KeyWrap(new_kek()))
        sender = callbacks.CallbackSender(
            settings, session_factory(engine), signer, asyncio.Event(), callbacks.CallbackMetrics(registry)
        )
        try:
            deadline = time.monotonic() + 20
            while registry.get_sample_value("tongban_exchange_callback_attempts_total", {"outcome": "failed"}) != 1:
                assert time.monotonic() < deadline
                await sender.deliver_due()
                await asyncio.sleep(0.05)
            assert await sender.deliver_due() == 0  # given up: never tried again
        finally:
            await sender.close()

    assert len(hook.received) == 3 and orjson.loads(hook.received[0][1])["status"] == "timeout"
    async with engine.connect() as db:
        row = (await db.execute(text("SELECT query_id, state, attempts, last_error FROM exchange.callbacks"))).one()
    assert tuple(row) == (query_id, "failed", 3, "HTTP 503")

"""期限 — a query's deadline and the errors after its request has gone. ``timeout_ms`` bounds the
call; at the deadline the consumer gets 504 and the query stays readable. An error after the
request was committed to be sent says so (503 ``query-interrupted``, with the query's id), never
that nothing was changed."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.bus import Message
from services.common.db import session_factory
from services.common.errors import Problem
from services.common.pb import audit_pb2
from services.connector.service import synthetic_residents
from services.exchange.messaging import on_late_replies
from services.exchange.models import Query
from services.exchange.problems import ExchangeProblem
from services.exchange.schemas import QueryCreate
from tests.exchange.support import PURPOSE, RESOURCE, add_grant, consumer, provider_reply, replica, sent_request
from tests.stack import asyncpg_dsn, database_url


@pytest.fixture(autouse=True)
async def granted(engine: AsyncEngine) -> None:
    """A live grant of the published resource to the consumer (each test has a database of its
    own: one makes it refuse connections)."""
    await add_grant(engine)


def body(timeout_ms: int) -> QueryCreate:
    subject = synthetic_residents(1)[0].id_number
    return QueryCreate.model_validate(
        {
            "resource": RESOURCE,
            "purpose": PURPOSE,
            "subject": {"type": "id_card", "value": subject},
            "timeout_ms": timeout_ms,
        }
    )


async def test_at_the_deadline_the_consumer_gets_504_and_the_query_stays_readable(engine: AsyncEngine) -> None:
    exchange = replica(engine)
    began = time.monotonic()
    with pytest.raises(Problem) as raised:
        await exchange.query(consumer(), body(timeout_ms=300), "deadline-1")
    took = time.monotonic() - began
    assert raised.value.status == 504 and raised.value.code == ExchangeProblem.PROVIDER_TIMEOUT
    # The whole call, counted from its start: at least the deadline, and well short of the 5 s
    # default a lost timeout_ms would fall back to (the bound is loose: a loaded machine is slow).
    assert 0.3 <= took < 3.0, took
    query_id = uuid.UUID(raised.value.body()["query_id"])
    async with session_factory(engine)() as session:
        query = await session.get(Query, query_id)
    assert query is not None and query.status == "timeout"


async def test_an_error_after_the_request_was_sent_says_so_and_names_the_query(engine: AsyncEngine) -> None:
    """The database goes away while the query waits for its reply: the request was committed to
    be sent (the provider may answer it), so the answer is 503 ``query-interrupted`` with the
    query's id — read it later or retry with the same key — not ``database-unavailable``."""
    exchange = replica(engine)
    url = engine.url.render_as_string(hide_password=False)
    _, name = asyncpg_dsn(url)
    admin = await asyncpg.connect(asyncpg_dsn(database_url(url, "postgres"))[0])
    try:
        asking = asyncio.create_task(exchange.query(consumer(), body(timeout_ms=1500), "interrupted-1"))
        await asyncio.sleep(0.7)  # the query is written and waits for the reply
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        with pytest.raises(Problem) as raised:
            await asking
        problem = raised.value
        assert problem.status == 503 and problem.code == ExchangeProblem.QUERY_INTERRUPTED, problem.body()
        assert "nothing was changed" not in problem.body()["detail"]
        assert "Idempotency-Key" in problem.body()["detail"]
        assert problem.headers["Retry-After"] == "1"
        query_id = uuid.UUID(problem.body()["query_id"])
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    async with session_factory(engine)() as session:
        query = await session.get(Query, query_id)
    assert query is not None and query.status == "pending"  # sent; its outcome is still to come


async def test_a_reply_its_waiter_could_not_record_is_recorded_by_the_late_reply_consumer(
    engine: AsyncEngine,
) -> None:
    """The provider answers in time, but the database is away when the waiter would record the
    answer: the consumer is told ``query-interrupted``. The reply is not lost: the late-reply
    consumer (which commits its offset only after recording) records it as answered on time, with
    its one audit outcome, and the consumer's retry with the same key reads that answer."""
    exchange = replica(engine)
    url = engine.url.render_as_string(hide_password=False)
    _, name = asyncpg_dsn(url)
    admin = await asyncpg.connect(asyncpg_dsn(database_url(url, "postgres"))[0])
    try:
        asking = asyncio.create_task(exchange.query(consumer(), body(timeout_ms=1500), "unrecorded-1"))
        deadline = time.monotonic() + 10
        while not exchange.waiters:
            assert time.monotonic() < deadline and not asking.done()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # written and published: the query waits for its reply
        query_id = next(iter(exchange.waiters))
        reply = provider_reply(
            query_id, await sent_request(engine, query_id), {"姓名": "张三", "户籍地址": "北京市东城区"}
        )
        reply.answered_unix_ms = int(time.time() * 1000)
        reply.deadline_unix_ms = reply.answered_unix_ms + 1000
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        exchange.dispatch(reply)
        with pytest.raises(Problem) as raised:
            await asking
        assert raised.value.code == ExchangeProblem.QUERY_INTERRUPTED, raised.value.body()
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()

    handle = on_late_replies(exchange, session_factory(engine))
    await handle([Message("exchange.replies", reply.SerializeToString(), query_id.encode())])
    await handle([Message("exchange.replies", reply.SerializeToString(), query_id.encode())])  # redelivered

    async with session_factory(engine)() as session:
        query = await session.get(Query, uuid.UUID(query_id))
        values = (await session.execute(text("SELECT topic, value FROM exchange.outbox"))).all()
    assert query is not None and query.status == "completed", query.response
    outcomes = [
        audit_pb2.AuditEvent.FromString(value).outcome for topic, value in values if topic.endswith("audit.events")
    ]
    assert outcomes == ["completed"]  # once, although the reply came twice
    again = await exchange.query(consumer(), body(timeout_ms=1500), "unrecorded-1")
    assert again["status"] == "completed" and again["data"] == {"姓名": "张三", "户籍地址": "北京市东城区"}


async def test_the_same_key_while_its_query_waits_is_in_progress_and_after_it_the_outcome(
    engine: AsyncEngine,
) -> None:
    """A client whose first attempt was cut off (the gateway retries it on another replica) asks
    again with the same Idempotency-Key while the first replica still waits: 409
    ``idempotency-in-progress``, naming the query, with Retry-After; once the query has ended the
    same key gets its outcome, and the provider was asked once."""
    first, second = replica(engine), replica(engine)
    question = body(timeout_ms=1500)
    asking = asyncio.create_task(first.query(consumer(), question, "cut-off-1"))
    await asyncio.sleep(0.5)  # written, waiting for the provider
    with pytest.raises(Problem) as raised:
        await second.query(consumer(), question, "cut-off-1")
    problem = raised.value
    assert problem.status == 409 and problem.code == ExchangeProblem.IDEMPOTENCY_IN_PROGRESS, problem.body()
    assert problem.headers == {"Retry-After": "1"}
    query_id = problem.body()["query_id"]
    with pytest.raises(Problem) as first_outcome:
        await asking
    assert first_outcome.value.status == 504 and first_outcome.value.body()["query_id"] == query_id
    with pytest.raises(Problem) as replayed:
        await second.query(consumer(), question, "cut-off-1")
    assert replayed.value.status == 504 and replayed.value.body()["query_id"] == query_id
    async with session_factory(engine)() as session:
        asked = await session.scalar(text("SELECT count(*) FROM exchange.queries WHERE idempotency_key = 'cut-off-1'"))
    assert asked == 1

"""回执留存 — the connector answers each query once: a request delivered again (Kafka redelivery
after a crash or rebalance, a request published twice by the exchange's outbox) is answered with
the stored signed reply, never by asking the provider's backend again; also when both deliveries
arrive at the same moment."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import driver_connection
from services.common.pb import exchange_pb2
from services.connector.service import LookupMetrics, Outgoing, Responder, purge_replies, synthetic_residents

DEPT = "111101000000198608"
RESIDENT = synthetic_residents(1, seed=7)[0]


@pytest.fixture
async def engine(tier_engine: AsyncEngine) -> AsyncEngine:
    """The tier's engine with one resident in the demo backend (committed: the reply store is
    exercised across transactions and connections, which a rolled-back session cannot show)."""
    async with driver_connection(tier_engine) as db:
        await db.execute(
            "INSERT INTO connector.residents VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            RESIDENT.id_number,
            RESIDENT.name,
            RESIDENT.gender,
            RESIDENT.birth_date,
            RESIDENT.address,
        )
    return tier_engine


def responder() -> Responder:
    return Responder(DEPT, "k1", Ed25519PrivateKey.generate(), LookupMetrics(CollectorRegistry()))


def request(query_id: str | None = None) -> tuple[bytes, exchange_pb2.ExchangeRequest]:
    message = exchange_pb2.ExchangeRequest(
        query_id=query_id or str(uuid.uuid4()),
        provider_dept=DEPT,
        subject_type="id_card",
        subject_value=RESIDENT.id_number,
        fields=["姓名", "户籍地址"],
        deadline_unix_ms=1,
    )
    return message.SerializeToString(), message


async def answer(
    engine: AsyncEngine, who: Responder, *requests: tuple[bytes, exchange_pb2.ExchangeRequest]
) -> list[Outgoing]:
    async with driver_connection(engine) as db:
        return await who.answer_once(db, list(requests))


def counts(who: Responder) -> tuple[float, float]:
    """(backend look-ups, replies re-sent) as the connector's metrics count them."""
    return tuple(c.collect()[0].samples[0].value for c in (who.metrics.lookups, who.metrics.resent))  # type: ignore[return-value]


def decoded(outgoing: Outgoing) -> exchange_pb2.ExchangeReply:
    reply = exchange_pb2.ExchangeReply()
    reply.ParseFromString(outgoing.value)
    return reply


async def test_a_request_delivered_again_gets_the_stored_reply_without_a_second_look_up(engine: AsyncEngine) -> None:
    who = responder()
    delivered = request()
    [first] = await answer(engine, who, delivered)
    assert decoded(first).status == exchange_pb2.ExchangeReply.OK
    assert dict(decoded(first).data) == {"姓名": RESIDENT.name, "户籍地址": RESIDENT.address}
    assert counts(who) == (1, 0)

    [again] = await answer(engine, who, delivered)
    assert again == first  # byte for byte: the same signature, the same answered_unix_ms
    assert counts(who) == (1, 1)


async def test_the_same_query_twice_in_one_batch_is_looked_up_once(engine: AsyncEngine) -> None:
    who = responder()
    delivered = request()
    replies = await answer(engine, who, delivered, delivered, request())
    assert len(replies) == 2  # one per distinct query
    assert counts(who) == (2, 0)


async def test_two_deliveries_at_the_same_moment_cause_one_look_up(engine: AsyncEngine) -> None:
    """Two connector replicas (or a redelivery racing the first) answer one query concurrently:
    the second waits on the first's claim and sends its stored reply."""
    who, other = responder(), responder()
    delivered = request()
    async with driver_connection(engine) as holder:
        # Hold the first delivery's transaction open after its claim, so the second surely races it.
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("INSERT INTO connector.replies (query_id) VALUES ($1)", delivered[1].query_id)
        racing = asyncio.create_task(answer(engine, other, delivered))
        await asyncio.sleep(0.3)
        assert not racing.done(), "the second delivery must wait for the first's claim"
        [first] = await who.answer(holder, [delivered])
        await holder.execute(
            "UPDATE connector.replies SET reply = $2 WHERE query_id = $1", first.query_id, first.SerializeToString()
        )
        await transaction.commit()
    [second] = await racing
    assert second.value == first.SerializeToString()
    assert counts(other) == (0, 1)


async def test_a_delivery_whose_transaction_rolled_back_is_answered_by_the_next(engine: AsyncEngine) -> None:
    """A crash before the commit leaves no claim behind: the redelivery looks the subject up."""
    who = responder()
    delivered = request()
    async with driver_connection(engine) as db:
        transaction = db.transaction()
        await transaction.start()
        await who.answer_once(db, [delivered])  # a savepoint inside the outer transaction
        await transaction.rollback()
    [reply] = await answer(engine, who, delivered)
    assert decoded(reply).status == exchange_pb2.ExchangeReply.OK
    assert counts(who) == (2, 0)


async def test_replies_past_their_retention_are_purged(engine: AsyncEngine) -> None:
    who = responder()
    old, recent = request(), request()
    await answer(engine, who, old, recent)
    async with driver_connection(engine) as db:
        await db.execute(
            "UPDATE connector.replies SET created_at = now() - interval '2 hours' WHERE query_id = $1", old[1].query_id
        )
        assert await purge_replies(db, 3600) >= 1
        left = await db.fetch(
            "SELECT query_id FROM connector.replies WHERE query_id = ANY($1::text[])",
            [old[1].query_id, recent[1].query_id],
        )
    assert [r["query_id"] for r in left] == [recent[1].query_id]

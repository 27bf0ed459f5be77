"""Two exchange replicas share the queries; one is SIGKILLed while queries flow (issue 10).

Replica A is the gateway's upstream; replica B gets half the queries directly (the way a load
balancer would spread them), until it dies; then its consumers fail over to the gateway. After the
kill, every query that reached either replica ends in a state its consumer can read: answered,
answered late (``timeout`` then ``late_reply``), or — a query B was waiting for, whose reply no
replica was waiting for any more — closed as ``timeout`` (reason ``abandoned``) by A. The provider's
backend is asked at most once per query (B's unsent or undeleted requests are published by A's
relay once B's lease expires; the connector answers a repeat from its reply store), and the audit
chain verifies. Look-ups are counted from the connector's access log, as in ``test_faults.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.demo import DemoCredentials
from tests.e2e.client import person_token, query_body, system_token
from tests.e2e.test_faults import RESIDENTS, SETTLE_S, TIMEOUT_MS, lookups_of, restart_connector
from tests.stack import DistributedStack, free_port, infra_env

Stack = tuple[DistributedStack, DemoCredentials]
FAST_ABANDON = {"TONGBAN_EXCHANGE_ABANDONED_AFTER_S": "1"}


@pytest.fixture
async def replicas(distributed: Stack) -> AsyncIterator[str]:
    """Replica A (restarted to close abandoned queries 1 s past their deadline) and replica B on a
    port of its own; B's base URL. A is restored to its defaults afterwards."""
    stack, _ = distributed
    stack.stop("exchange")
    stack.spawn("exchange", "services.exchange", FAST_ABANDON)
    stack.ports["exchange-b"] = free_port()
    stack.spawn(
        "exchange-b", "services.exchange", {**FAST_ABANDON, "TONGBAN_EXCHANGE_PORT": str(stack.ports["exchange-b"])}
    )
    await restart_connector(stack, kill=False)  # its access log on
    await stack.wait_ready("exchange")
    await stack.wait_ready("exchange-b")
    try:
        yield f"http://127.0.0.1:{stack.ports['exchange-b']}"
    finally:
        stack.stop("exchange-b")
        stack.ports.pop("exchange-b", None)
        stack.stop("exchange")
        stack.start_service("exchange")
        await stack.wait_ready("exchange")


async def test_an_exchange_replica_killed_while_queries_flow_leaves_every_query_readable_and_asks_once(
    distributed: Stack, db: asyncpg.Connection, replicas: str
) -> None:
    stack, creds = distributed
    subjects = RESIDENTS[840:880]
    keys: list[str] = []
    cut_off: list[str] = []  # calls to B that died with it
    async with (
        httpx.AsyncClient(base_url=creds.gateway, timeout=60.0) as gateway,
        httpx.AsyncClient(base_url=replicas, timeout=60.0) as replica_b,
    ):
        headers = await system_token(gateway, creds)
        auditor = await person_token(gateway, "auditor")
        waiting = asyncio.Queue[str]()
        for subject in subjects:
            waiting.put_nowait(subject)
        b_alive = True

        async def sender(via_b: bool) -> None:
            while not waiting.empty():
                subject, key = waiting.get_nowait(), str(uuid.uuid4())
                keys.append(key)
                body = query_body(creds, subject={"type": "id_card", "value": subject}, timeout_ms=TIMEOUT_MS)
                client = replica_b if via_b and b_alive else gateway
                try:
                    response = await client.post(
                        "/v1/exchange/queries", json=body, headers={**headers, "Idempotency-Key": key}
                    )
                    assert response.status_code in (200, 504), response.text
                except httpx.TransportError:
                    assert via_b, "only replica B dies"  # the consumer does not learn the outcome here
                    cut_off.append(key)
                await asyncio.sleep(0.05)

        # Many calls to B at once, so that some are in flight (written, waiting) when it dies.
        senders = [asyncio.create_task(sender(via_b)) for via_b in (False, False, *[True] * 6)]
        await asyncio.sleep(0.5)
        b_alive = False
        stack.stop("exchange-b", kill=True)
        await asyncio.gather(*senders)

        rows = await db.fetch(
            "SELECT id::text, idempotency_key FROM exchange.queries WHERE client_id = $1 AND idempotency_key = ANY($2)",
            creds.client_id,
            keys,
        )
        ids = [r["id"] for r in rows]
        # A call cut off may have died before or after its query was written; every other was.
        assert set(keys) - set(cut_off) <= {r["idempotency_key"] for r in rows}

        await settled(db, ids, timeout_s=SETTLE_S)
        await late_replies_consumed(stack, SETTLE_S)  # B's share of the replies, handled by A
        statuses, chains = await audit_chains(db, ids, timeout_s=SETTLE_S)
        for query_id, chain in chains.items():
            assert chain == expected_chain(statuses[query_id], chain), (query_id, statuses[query_id], chain)
        for query_id in ids:
            read = await gateway.get(f"/v1/exchange/queries/{query_id}", headers=headers)
            assert read.status_code == 200, read.text
            assert read.json()["status"] == statuses[query_id] or (statuses[query_id], read.json()["status"]) == (
                "timeout",
                "late_reply",  # its late reply came meanwhile
            )

        verify = await gateway.get("/v1/audit/verify", headers=auditor)
        assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text

    asked = lookups_of(stack, ids)
    assert {q: n for q, n in asked.items() if n > 1} == {}, "the backend was asked more than once"
    answered = [q for q in ids if statuses[q] != "timeout"]
    assert all(asked[q] == 1 for q in answered)
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in ("completed", "late_reply", "timeout")}
    print(
        f"exchange replica SIGKILL: accepted {len(ids)} of {len(subjects)} ({len(cut_off)} calls cut off), "
        f"{counts}, duplicates 0"
    )
    assert len(keys) == len(subjects)


def expected_chain(status: str, chain: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The one audit outcome chain (outcome, reason) a query of ``status`` may have: answered on
    time; answered late; or closed as abandoned (its waiting replica died), perhaps answered later."""
    if status == "late_reply" and chain and chain[0] == ("timeout", "abandoned"):
        return [("timeout", "abandoned"), ("late_reply", "completed")]
    return {
        "completed": [("completed", "")],
        "late_reply": [("timeout", ""), ("late_reply", "completed")],
        "timeout": [("timeout", "abandoned")],
    }[status]


async def settled(
    db: asyncpg.Connection, ids: list[str], timeout_s: float, *, answered: bool = False
) -> dict[str, str]:
    """Each query's status once none is pending (abandoned ones are closed 1 s past deadline);
    ``answered``: once each has its answer too (completed or late_reply) — when no exchange died,
    a request in flight at a dead connector is redelivered to the survivor, which answers late."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    waiting_for = {"pending", "timeout"} if answered else {"pending"}
    while True:
        rows = await db.fetch("SELECT id::text, status FROM exchange.queries WHERE id = ANY($1::uuid[])", ids)
        statuses = {r["id"]: r["status"] for r in rows}
        if not waiting_for & set(statuses.values()):
            await asyncio.sleep(1.0)  # a late reply may still turn a timeout into late_reply
            rows = await db.fetch("SELECT id::text, status FROM exchange.queries WHERE id = ANY($1::uuid[])", ids)
            return {r["id"]: r["status"] for r in rows}
        assert asyncio.get_running_loop().time() < deadline, f"still {sorted(waiting_for)} after {timeout_s} s"
        await asyncio.sleep(0.3)


async def audit_chains(
    db: asyncpg.Connection, ids: list[str], timeout_s: float
) -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """Each query's status and its audit (outcome, reason) in chain order, once every query is out
    of ``pending`` and has the record of its status. The statuses are read again each round: an
    abandoned query (``timeout``) may still get its late reply — e.g. when its request waited in
    a dead replica's outbox for the lease to expire — and then ends as ``late_reply``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        rows = await db.fetch("SELECT id::text, status FROM exchange.queries WHERE id = ANY($1::uuid[])", ids)
        statuses = {r["id"]: r["status"] for r in rows}
        rows = await db.fetch(
            "SELECT query_id, outcome, reason FROM audit.records WHERE query_id = ANY($1::text[]) ORDER BY seq", ids
        )
        chains: dict[str, list[tuple[str, str]]] = {q: [] for q in ids}
        for row in rows:
            chains[row["query_id"]].append((row["outcome"], row["reason"]))
        missing = {q: (statuses.get(q), chains[q]) for q in ids if not chains[q] or chains[q][-1][0] != statuses.get(q)}
        if not missing:
            return statuses, chains
        assert asyncio.get_running_loop().time() < deadline, f"audit records missing after {timeout_s} s: {missing}"
        await asyncio.sleep(0.3)


async def late_replies_consumed(stack: DistributedStack, timeout_s: float) -> None:
    """Wait until the exchange's late-reply consumers (one group) have handled every reply on the
    topic: the group's committed offset is the end offset on every partition. A replica SIGKILLed
    holds its partitions until its session times out (about 10 s); the replies it had read but
    not committed are then handled by the survivor, which records a late reply to a query it may
    have closed as abandoned meanwhile (``timeout`` then ``late_reply``). Only after that is a
    query's state final; reading it earlier races the rebalance."""
    bootstrap = infra_env()["TONGBAN_KAFKA_BOOTSTRAP"]
    topic, group = f"{stack.prefix}exchange.replies", f"{stack.prefix}exchange.late-replies"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    ends = AIOKafkaConsumer(bootstrap_servers=bootstrap)  # no group: it only reads end offsets
    await admin.start()
    await ends.start()
    try:
        (described,) = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        assert partitions, f"no partitions of {topic}"
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            end = await ends.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            behind = {
                tp.partition: end[tp] - max(committed[tp].offset if tp in committed else 0, 0)
                for tp in partitions
                if end[tp] > max(committed[tp].offset if tp in committed else 0, 0)
            }
            if not behind:
                return
            assert asyncio.get_running_loop().time() < deadline, (
                f"late replies not handled after {timeout_s} s: {behind}"
            )
            await asyncio.sleep(0.5)
    finally:
        await ends.stop()
        await admin.close()

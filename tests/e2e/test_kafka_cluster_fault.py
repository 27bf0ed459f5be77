"""Every service on the three-node Kafka cluster (replication 3, min ISR 2, as deploy/k8s runs it);
the broker leading the provider's request topic is SIGKILLed while queries flow and stays dead.

The checks are the broker-fault test's (``tests/e2e/test_faults.py: queries_under``): every accepted
query ends answered and readable, with one audit outcome chain, the audit chain verifies, and the
provider's backend was asked exactly once per query. Here the cluster goes on with two brokers:
queries in flight during the leader election may be answered late, and queries sent with the
broker still dead complete on time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.demo import DemoCredentials
from tests.e2e.client import query_body, system_token
from tests.e2e.test_faults import RESIDENTS, TIMEOUT_MS, queries_under
from tests.stack import DistributedStack, asyncpg_dsn, create_database, drop_database, infra, infra_env

QUERIES = 30
AFTER = 5  # queries sent once the broker is dead, each answered on time


class ClusterStack(DistributedStack):
    """A distributed stack whose services use the three-node cluster."""

    bootstrap: str = ""

    def env(self) -> dict[str, str]:
        return {**super().env(), "TONGBAN_KAFKA_BOOTSTRAP": self.bootstrap}


@pytest.fixture(scope="module")
async def on_cluster(kafka_cluster: str) -> AsyncIterator[tuple[ClusterStack, DemoCredentials]]:
    stack = ClusterStack(database_url=await create_database(infra_env()["TONGBAN_DATABASE_URL"]))
    stack.bootstrap = kafka_cluster
    try:
        yield stack, await stack.start()
    finally:
        stack.stop_all()
        await drop_database(stack.database_url)


async def leaders(bootstrap: str, prefix: str) -> Counter[int]:
    """How many partitions of the provider's request topics each broker leads."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(f"{prefix}exchange.requests.")]
        assert topics, "no request topic yet"
        return Counter(p["leader"] for d in await admin.describe_topics(topics) for p in d["partitions"])
    finally:
        await admin.close()


async def test_the_request_topics_leader_killed_while_queries_flow(
    on_cluster: tuple[ClusterStack, DemoCredentials],
) -> None:
    stack, creds = on_cluster
    conn = await asyncpg.connect(asyncpg_dsn(stack.database_url)[0])
    victim: int | None = None

    async def kill_the_leader() -> None:
        nonlocal victim
        victim = (await leaders(stack.bootstrap, stack.prefix)).most_common(1)[0][0]
        await asyncio.to_thread(infra, "cluster-kill", str(victim))

    try:
        counts = await queries_under((stack, creds), conn, RESIDENTS[800 : 800 + QUERIES], kill_the_leader)
        after = await leaders(stack.bootstrap, stack.prefix)
        # The broker is still dead: with two of three the cluster stays writable (min ISR 2), so
        # new queries complete on time, not late.
        async with httpx.AsyncClient(base_url=creds.gateway, timeout=60.0) as client:
            headers = await system_token(client, creds)
            for subject in RESIDENTS[800 + QUERIES : 800 + QUERIES + AFTER]:
                body = query_body(creds, subject={"type": "id_card", "value": subject}, timeout_ms=TIMEOUT_MS)
                answer = await client.post(
                    "/v1/exchange/queries", json=body, headers={**headers, "Idempotency-Key": str(uuid.uuid4())}
                )
                assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
    finally:
        await conn.close()
        if victim is not None:
            await asyncio.to_thread(infra, "cluster-start", str(victim))  # whole again, for the next test
    print(
        f"\nkafka cluster, broker {victim} (leading the request topic) SIGKILLed: {counts}, then {AFTER} more completed"
    )
    assert victim is not None and victim not in after, after  # its partitions have new leaders

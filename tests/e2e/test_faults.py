"""Faults while queries flow (issue 10): the connector SIGKILLed and restarted; the Kafka broker
SIGKILLed and restarted. After each, every accepted query ends in a state the consumer can read,
none is lost, the provider's backend was asked exactly once per query, each query has one audit
outcome (``completed``, or ``timeout`` then ``late_reply``: one outcome chain), and the audit
chain verifies.

Backend look-ups are counted from the connector's access log (``TONGBAN_CONNECTOR_LOG_LOOKUPS``):
one line per look-up naming its queries, written *before* the look-up, and one once its replies
are committed to the reply store, to a file that survives the connector's SIGKILL. The tests
assert one committed look-up per query; a look-up begun but cut off by the kill before its
commit is asked again when the request is delivered again, and is reported, not hidden. (The backend's own
statistics were tried first: PostgreSQL counts rows per plan, a sequential scan of the whole table
for a large batch, so they cannot count subjects.) The connector's counters
(``tongban_connector_backend_lookups_total``, ``…_replies_resent_total``) are reported too, for
the process alive at the end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import orjson

from services.connector.service import synthetic_residents
from services.demo import DemoCredentials
from tests.e2e.client import person_token, query_body, system_token
from tests.stack import DistributedStack, asyncpg_dsn, infra

Stack = tuple[DistributedStack, DemoCredentials]

QUERIES = 30
TIMEOUT_MS = 2500
# The connector's demo population (TONGBAN_CONNECTOR_DEMO_POPULATION, 1000): each fault test asks
# about subjects no other test asks about.
RESIDENTS = [r.id_number for r in synthetic_residents(1000)]


async def restart_connector(stack: DistributedStack, *, kill: bool) -> None:
    """Stop the connector (SIGKILL or SIGTERM) and start it again with its access log on."""
    stack.stop("connector", kill=kill)
    stack.spawn("connector", "services.connector", {"TONGBAN_CONNECTOR_LOG_LOOKUPS": "true"})
    await stack.wait_ready("connector")


def lookups_of(
    stack: DistributedStack, ids: list[str], connectors: tuple[str, ...] = ("connector",), *, committed: bool = True
) -> dict[str, int]:
    """How many times the backend was asked about each of the queries ``ids``, from the access logs
    of ``connectors`` (the processes' names in the stack: replicas of one department share a backend):
    the look-ups whose replies were stored (``committed``), or every look-up begun — those cut off
    by a SIGKILL before their commit included, which the redelivered request asks again."""
    marker = b'"backend look-up committed"' if committed else b'"backend look-up"'
    asked = dict.fromkeys(ids, 0)
    for name in connectors:
        for line in (stack.logs / f"{stack.prefix}{name}.log").read_bytes().splitlines():
            if marker not in line:
                continue
            for query_id in orjson.loads(line).get("query_ids", []):
                if query_id in asked:
                    asked[query_id] += 1
    return asked


async def connector_counters(stack: DistributedStack) -> dict[str, float]:
    """The live connector's look-up and re-send counters (since its last start)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(f"http://127.0.0.1:{stack.ports['connector']}/metrics")).text
    wanted = ("tongban_connector_backend_lookups_total", "tongban_connector_replies_resent_total")
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith(wanted)}


async def ask(client: httpx.AsyncClient, headers: dict[str, str], creds: DemoCredentials, subject: str) -> str:
    """One query as a consumer sends it; the query id (every outcome here names it). While the
    database is down the platform answers 503 (nothing written, or sent but not yet recorded) or
    409 (the same key still being answered): the consumer retries with the same Idempotency-Key,
    as the problem tells it to, and the provider is never asked again for it."""
    body = query_body(creds, subject={"type": "id_card", "value": subject}, timeout_ms=TIMEOUT_MS)
    key = str(uuid.uuid4())
    retry_until = time.monotonic() + SETTLE_S
    while True:
        began = time.monotonic()
        response = await client.post("/v1/exchange/queries", json=body, headers={**headers, "Idempotency-Key": key})
        took = time.monotonic() - began
        answer: dict[str, Any] = response.json()
        if response.status_code in (409, 503):
            assert response.headers["content-type"] == "application/problem+json", response.text
            assert answer["type"].rsplit("/", 1)[-1] in RETRYABLE, response.text
            assert time.monotonic() < retry_until, f"still {response.status_code} after {SETTLE_S} s: {answer}"
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code == 200:
            return str(answer["id"])
        assert response.status_code == 504, response.text  # the provider (or the way to it) is down
        assert answer["type"].endswith("/provider-timeout")
        # The deadline bounds the whole call, the publish included (before, a broker outage held it 19-22 s).
        assert took < TIMEOUT_MS / 1000 + 1.5, f"504 after {took:.1f} s for a {TIMEOUT_MS} ms timeout"
        return str(answer["query_id"])


# What a consumer may be told while the database is down, each saying "retry with the same key".
RETRYABLE = {"database-unavailable", "query-interrupted", "idempotency-in-progress"}


async def queries_under(
    stack: Stack, db: asyncpg.Connection, subjects: list[str], fault: Callable[[], Awaitable[None]]
) -> dict[str, int]:
    """Send one query per subject, four at a time; inject ``fault`` after the first third; check
    every outcome. The counts, for the report."""
    distributed, creds = stack
    await restart_connector(distributed, kill=False)  # its access log on
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=60.0) as client:
        headers = await system_token(client, creds)
        auditor = await person_token(client, "auditor")
        waiting = asyncio.Queue[str]()
        for subject in subjects:
            waiting.put_nowait(subject)
        ids: list[str] = []

        async def sender() -> None:
            while not waiting.empty():
                ids.append(await ask(client, headers, creds, waiting.get_nowait()))
                await asyncio.sleep(0.1)

        senders = [asyncio.create_task(sender()) for _ in range(4)]
        await asyncio.sleep(len(subjects) / 3 / 4 * 0.15)  # about a third sent, four at a time
        await fault()
        await asyncio.gather(*senders)
        assert len(ids) == len(subjects) == len(set(ids))

        given, db = db, await reconnected(db, distributed.database_url)  # the fault may be the database's
        try:
            statuses = await settled_and_audited(client, db, ids, headers, auditor)
            asked = lookups_of(distributed, ids)
            begun = lookups_of(distributed, ids, committed=False)
            # A commit PostgreSQL made durable but could not acknowledge (it crashed in between)
            # logs no "committed" line: the redelivered request finds the stored reply and re-sends
            # it. Such a query was looked up (a begun line) and its reply is in the store.
            unacknowledged = sorted(q for q, n in asked.items() if n == 0)
            assert [q for q in unacknowledged if begun[q] == 0] == [], "answered without any look-up?"
            stored = await db.fetch(
                "SELECT query_id FROM connector.replies WHERE query_id = ANY($1::text[]) AND reply IS NOT NULL",
                unacknowledged,
            )
            assert sorted(r["query_id"] for r in stored) == unacknowledged, "answered without a stored reply?"
        finally:
            if db is not given:
                await db.close()

    duplicates = {q: n for q, n in asked.items() if n > 1}
    assert duplicates == {}, f"the backend was asked more than once: {duplicates}"
    late = sum(1 for s in statuses.values() if s == "late_reply")
    return {
        "queries": len(ids),
        "lost": 0,
        "late": late,
        "lookups": sum(asked.values()) + len(unacknowledged),
        "duplicates": 0,
        "commit_unacknowledged": len(unacknowledged),
        # Look-ups cut off by a SIGKILL between the look-up and the commit of its stored reply,
        # then asked again: the window the one-transaction design leaves (see the closing note).
        "cut_off_and_asked_again": sum(begun.values()) - sum(asked.values()) - len(unacknowledged),
        **await connector_counters(distributed),
    }


# How long a fault test waits for every query to settle and be audited: an upper bound for
# "eventually" (rebalances wait out session timeouts; a loaded CI machine is slow), not a speed.
SETTLE_S = 180


async def settled_and_audited(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    ids: list[str],
    headers: dict[str, str],
    auditor: dict[str, str],
) -> dict[str, str]:
    """Each query's final status, once every one is answered and audited (one outcome chain) and
    the audit chain verifies."""
    # Every query ends answered: on time, or late (its 504 then its late reply); none is lost.
    statuses = await terminal(db, ids, timeout_s=SETTLE_S)
    for query_id in ids:
        read = await client.get(f"/v1/exchange/queries/{query_id}", headers=headers)
        assert read.status_code == 200, read.text
        assert read.json()["status"] in ("completed", "late_reply"), read.text

    chains = await outcome_chains(db, ids, timeout_s=SETTLE_S)
    assert {tuple(chain) for chain in chains.values()} <= {("completed",), ("timeout", "late_reply")}, chains
    for query_id in ids:
        expected = ["completed"] if statuses[query_id] == "completed" else ["timeout", "late_reply"]
        assert chains[query_id] == expected, (query_id, statuses[query_id], chains[query_id])

    verify = await client.get("/v1/audit/verify", headers=auditor)
    assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text
    return statuses


async def reconnected(db: asyncpg.Connection, database_url: str) -> asyncpg.Connection:
    """``db``, or a new connection if the database was restarted under it (its owner closes it)."""
    try:
        await db.fetchval("SELECT 1")
        return db
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return await asyncpg.connect(asyncpg_dsn(database_url)[0])


async def terminal(db: asyncpg.Connection, ids: list[str], timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await db.fetch("SELECT id::text, status FROM exchange.queries WHERE id = ANY($1::uuid[])", ids)
        statuses = {r["id"]: r["status"] for r in rows}
        if len(statuses) == len(ids) and set(statuses.values()) <= {"completed", "late_reply"}:
            return statuses
        assert time.monotonic() < deadline, f"not all answered after {timeout_s} s: {sorted(statuses.values())}"
        await asyncio.sleep(0.3)


async def outcome_chains(db: asyncpg.Connection, ids: list[str], timeout_s: float) -> dict[str, list[str]]:
    """Each query's audit outcomes in chain order, once every query has its final one."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await db.fetch(
            "SELECT query_id, outcome FROM audit.records WHERE query_id = ANY($1::text[]) ORDER BY seq", ids
        )
        chains: dict[str, list[str]] = {query_id: [] for query_id in ids}
        for row in rows:
            chains[row["query_id"]].append(row["outcome"])
        if all(chain and chain[-1] in ("completed", "late_reply") for chain in chains.values()):
            await asyncio.sleep(1.0)  # a duplicate record would arrive with the same batch: give it time
            rows = await db.fetch(
                "SELECT query_id, outcome FROM audit.records WHERE query_id = ANY($1::text[]) ORDER BY seq", ids
            )
            chains = {query_id: [] for query_id in ids}
            for row in rows:
                chains[row["query_id"]].append(row["outcome"])
            return chains
        assert time.monotonic() < deadline, f"audit outcomes missing after {timeout_s} s"
        await asyncio.sleep(0.3)


async def test_a_connector_killed_while_queries_flow_asks_the_backend_once_per_query(
    distributed: Stack, db: asyncpg.Connection
) -> None:
    stack, _ = distributed

    async def kill_and_restart_connector() -> None:
        await restart_connector(stack, kill=True)

    counts = await queries_under(distributed, db, RESIDENTS[900 : 900 + QUERIES], kill_and_restart_connector)
    print(f"connector SIGKILL: {counts}")


async def test_a_broker_killed_while_queries_flow_loses_nothing_and_asks_once(
    distributed: Stack, db: asyncpg.Connection
) -> None:
    async def kill_and_restart_broker() -> None:
        await asyncio.to_thread(infra, "kafka-stop", "--kill")
        await asyncio.sleep(2.0)  # queries keep coming while the broker is gone
        await asyncio.to_thread(infra, "kafka-start")

    counts = await queries_under(distributed, db, RESIDENTS[950 : 950 + QUERIES], kill_and_restart_broker)
    print(f"broker SIGKILL: {counts}")


async def test_the_database_crashed_while_queries_flow_loses_nothing_and_asks_once(
    distributed: Stack, db: asyncpg.Connection
) -> None:
    """PostgreSQL is killed (immediate stop: no checkpoint, WAL replay on start) and restarted."""

    async def crash_and_restart_database() -> None:
        await asyncio.to_thread(infra, "pg-stop", "--kill")
        await asyncio.sleep(2.0)  # queries keep coming while the database is gone
        await asyncio.to_thread(infra, "pg-start")

    counts = await queries_under(distributed, db, RESIDENTS[500 : 500 + QUERIES], crash_and_restart_database)
    print(f"database crash: {counts}")

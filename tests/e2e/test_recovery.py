"""Processes die mid-query: every query still ends with an outcome in the audit trail."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from services.demo import DemoCredentials
from tests.e2e.client import person_token, query_body, system_token, wait_for_audit
from tests.stack import DistributedStack, asyncpg_dsn, infra

Stack = tuple[DistributedStack, DemoCredentials]


async def wait_for_status(db: asyncpg.Connection, query_id: str, status: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (now := await db.fetchval("SELECT status FROM exchange.queries WHERE id = $1::uuid", query_id)) != status:
        assert time.monotonic() < deadline, f"query {query_id} is {now!r}, not {status!r}, after {timeout_s}s"
        await asyncio.sleep(0.2)


async def test_query_abandoned_by_a_killed_exchange_is_closed_and_audited(
    distributed: Stack, db: asyncpg.Connection
) -> None:
    stack, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        headers = await system_token(client, creds)
        stack.stop("connector", kill=True)  # no reply: the query stays pending
        try:
            before = await db.fetchval("SELECT coalesce(max(created_at), 'epoch') FROM exchange.queries")
            asking = asyncio.create_task(
                client.post("/v1/exchange/queries", json=query_body(creds, timeout_ms=2000), headers=headers)
            )
            deadline = time.monotonic() + 10
            while (
                query_id := await db.fetchval(
                    "SELECT id::text FROM exchange.queries WHERE status = 'pending' AND created_at > $1", before
                )
            ) is None:
                assert time.monotonic() < deadline, "the query never became pending"
                await asyncio.sleep(0.05)
            stack.stop("exchange", kill=True)  # the replica waiting for the reply dies
            response = await asking
            assert response.status_code == 502, response.text  # the gateway lost its upstream
            assert await db.fetchval("SELECT status FROM exchange.queries WHERE id = $1::uuid", query_id) == "pending"

            # A new replica closes it once it is 1 s past its deadline, with its audit record.
            stack.spawn("exchange", "services.exchange", {"TONGBAN_EXCHANGE_ABANDONED_AFTER_S": "1"})
            await stack.wait_ready("exchange")
            await wait_for_status(db, query_id, "timeout")
            auditor = await person_token(client, "auditor")
            record = await wait_for_audit(client, auditor, query_id, "timeout")
            assert record["reason"] == "abandoned"
            assert record["consumer_client_id"] == creds.client_id
        finally:
            stack.start_service("connector")
            await stack.wait_ready("connector")
        # The provider answers the request it was sent; that reply is recorded as late.
        await wait_for_status(db, query_id, "late_reply")
        await wait_for_audit(client, auditor, query_id, "late_reply")
        again = await client.post("/v1/exchange/queries", json=query_body(creds), headers=headers)
        assert again.status_code == 200, again.text


async def test_database_crash_delays_queries_but_loses_nothing(distributed: Stack) -> None:
    """PostgreSQL crashes (immediate stop, WAL replay on start) under a running platform: clients
    get 503 problems, never a 500, until every service has reconnected; an answered query and its
    audit record are still there."""
    stack, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        headers = await system_token(client, creds)
        auditor = await person_token(client, "auditor")
        before = await client.post("/v1/exchange/queries", json=query_body(creds), headers=headers)
        assert before.status_code == 200, before.text

        infra("pg-stop", "--kill")
        try:
            while_down = await client.post("/v1/exchange/queries", json=query_body(creds), headers=headers)
            assert while_down.status_code == 503, while_down.text
            assert while_down.json()["type"].endswith("/database-unavailable")
            assert while_down.headers["retry-after"] == "1"
        finally:
            infra("pg-start")

        seen: list[int] = []
        deadline = time.monotonic() + 60
        while (
            after := await client.post("/v1/exchange/queries", json=query_body(creds), headers=headers)
        ).status_code != 200:
            seen.append(after.status_code)
            assert after.status_code == 503, after.text  # a clear "try again", never a 500
            assert after.headers["content-type"] == "application/problem+json"
            assert after.json()["type"].endswith("/database-unavailable")
            assert int(after.headers["retry-after"]) > 0
            assert time.monotonic() < deadline, f"no answer 60 s after the database came back: {seen}"
            await asyncio.sleep(0.2)

        for answered in (before, after):
            query_id = answered.json()["id"]
            record = await wait_for_audit(client, auditor, query_id, "completed", timeout_s=60)
            assert record["consumer_client_id"] == creds.client_id
        conn = await asyncpg.connect(asyncpg_dsn(stack.database_url)[0])
        try:
            status = await conn.fetchval("SELECT status FROM exchange.queries WHERE id = $1::uuid", before.json()["id"])
            assert status == "completed"
        finally:
            await conn.close()

"""Processes die mid-query: every query still ends with an outcome in the audit trail."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from services.demo import DemoCredentials
from tests.e2e.client import person_token, query_body, system_token, wait_for_audit
from tests.stack import DistributedStack

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

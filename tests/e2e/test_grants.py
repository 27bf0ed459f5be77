"""Grant lifecycle at query time: the daily quota, and a revocation that reaches the exchange
even when the registry died between committing it and publishing it (the outbox relay)."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import httpx

from services.common.pb import registry_pb2
from services.demo import DemoCredentials
from tests.e2e.client import apply_for, person_token, publish_unconditional_resource, query_body, system_token
from tests.e2e.test_denials import assert_problem
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]


async def test_quota_then_revocation_left_in_the_outbox(distributed: Stack, db: asyncpg.Connection) -> None:
    stack, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        code = await publish_unconditional_resource(client, "居民姓名核验", "101030", "姓名", 50)
        system = await system_token(client, creds)
        application = await apply_for(client, system, creds, code, "姓名", purpose="QUOTA-TEST", daily_quota=1)
        assert application["status"] == "approved"  # unconditional: granted at once
        grant_id = application["grant_id"]
        body = query_body(creds, resource=code, purpose="QUOTA-TEST")
        deadline = time.monotonic() + 20
        while (first := await client.post("/v1/exchange/queries", json=body, headers=system)).status_code != 200:
            assert time.monotonic() < deadline, first.text  # the grant travels as an event
            await asyncio.sleep(0.3)
        assert first.json()["data"] == {"姓名": first.json()["data"]["姓名"]}
        second = await client.post("/v1/exchange/queries", json=body, headers=system)
        assert_problem(second, 429, "quota-exceeded")
        assert int(second.headers["retry-after"]) > 0

        # The registry committed a revocation and died before publishing it: the row is in its outbox.
        event = registry_pb2.RegistryEvent(
            event_id=uuid.uuid4().hex,
            occurred_unix_ms=int(time.time() * 1000),
            grant_revoked=registry_pb2.GrantRevoked(grant_id=grant_id, reason="test"),
        )
        await db.execute(
            "INSERT INTO registry.outbox (id, topic, key, value, headers, created_at) "
            "VALUES ($1, $2, $3, $4, '{}', now() - interval '1 minute')",
            uuid.uuid4(),
            f"{stack.prefix}registry.events",
            grant_id.encode(),
            event.SerializeToString(),
        )
        deadline = time.monotonic() + 30
        while (revoked := await client.post("/v1/exchange/queries", json=body, headers=system)).status_code != 403:
            assert time.monotonic() < deadline, revoked.text
            await asyncio.sleep(0.5)
        assert_problem(revoked, 403, "grant-revoked")
        assert await db.fetchval("SELECT count(*) FROM registry.outbox") == 0  # published, then removed


async def wait_for_row(db: asyncpg.Connection, sql: str, *args: object, timeout_s: float = 20.0) -> None:
    """Poll until ``sql`` returns true: the exchange has applied a registry event."""
    deadline = time.monotonic() + timeout_s
    while not await db.fetchval(sql, *args):
        assert time.monotonic() < deadline, f"timed out waiting for: {sql} {args}"
        await asyncio.sleep(0.1)


async def test_grant_and_revocation_bite_on_the_next_query(distributed: Stack, db: asyncpg.Connection) -> None:
    """No look-up cache may hide a change the exchange has applied: not a missing grant that has
    just been issued, nor a grant that has just been revoked."""
    _, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        code = await publish_unconditional_resource(client, "居民性别核验", "101040", "性别", 2)
        await wait_for_row(db, "SELECT count(*) = 1 FROM exchange.resources WHERE code = $1", code)
        system = await system_token(client, creds)
        body = query_body(creds, resource=code, purpose="CACHE-TEST")
        assert_problem(await client.post("/v1/exchange/queries", json=body, headers=system), 403, "no-grant")

        application = await apply_for(client, system, creds, code, "性别", purpose="CACHE-TEST")
        grant_id = uuid.UUID(application["grant_id"])
        await wait_for_row(db, "SELECT count(*) = 1 FROM exchange.grants WHERE id = $1", grant_id)
        granted = await client.post("/v1/exchange/queries", json=body, headers=system)
        assert granted.status_code == 200, granted.text
        assert list(granted.json()["data"]) == ["性别"]

        police = await person_token(client, "gaj_admin")
        revoke = await client.post(
            f"/v1/registry/grants/{grant_id}/revoke", json={"reason": "用途已结束"}, headers=police
        )
        assert revoke.status_code == 200, revoke.text
        await wait_for_row(db, "SELECT revoked FROM exchange.grants WHERE id = $1", grant_id)
        assert_problem(await client.post("/v1/exchange/queries", json=body, headers=system), 403, "grant-revoked")

"""The audit invariant under hostile input: two systems send valid and hostile queries at once;
every answered query and every denial ends with exactly one audit record, and the chain verifies.

Before, one over-long X-Request-Id made the audit store fail, and the consumer dead-lettered the
whole batch with it — other departments' records included — while verify still said ok.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from services.demo import CIVIL_AFFAIRS, DemoCredentials
from tests.e2e.client import apply_for, person_token, publish_unconditional_resource, query_body, system_token
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]
AUDITED = {200, 403, 404, 422, 429}


async def second_system(client: httpx.AsyncClient, stack: DistributedStack, creds: DemoCredentials) -> DemoCredentials:
    """Another consuming system of 市民政局, granted an unconditionally shared resource."""
    login = await client.post("/v1/auth/login", json={"username": "admin", "password": stack.admin_password})
    admin = {"authorization": f"Bearer {login.json()['access_token']}"}
    made = await client.post(
        f"/v1/departments/{CIVIL_AFFAIRS['code']}/systems",
        json={"name": "救助核验系统", "roles": ["consumer"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    other = DemoCredentials(
        **{**creds.__dict__, "client_id": made.json()["client_id"], "client_secret": made.json()["client_secret"]}
    )
    code = await publish_unconditional_resource(client, "居民出生日期核验", "101040", "出生日期", 8)
    headers = await system_token(client, other)
    assert (await apply_for(client, headers, other, code, "出生日期", purpose="INVARIANT-1"))["status"] == "approved"
    return DemoCredentials(**{**other.__dict__, "resource": code, "purpose": "INVARIANT-1"})


def hostile_mix(creds: DemoCredentials) -> list[tuple[dict[str, Any], dict[str, str | bytes]]]:
    """(body, extra headers) pairs: valid queries and the inputs that used to break audit."""
    long_id = "x" * 200
    return [
        (query_body(creds), {"x-request-id": long_id}),
        (query_body(creds), {"x-request-id": "含中文的请求号".encode()}),  # raw UTF-8 bytes on the wire
        (query_body(creds), {"x-request-id": "a b;c"}),
        (query_body(creds), {"traceparent": "00-" + "z" * 32 + "-" + "1" * 16 + "-01"}),
        (query_body(creds), {}),
        (query_body(creds, purpose="NOT-GRANTED"), {"x-request-id": long_id}),
        (query_body(creds, resource="999999/000001"), {}),
        (query_body(creds, resource="１０１０１０/０００００１"), {}),
        (query_body(creds, subject={"type": "id_card", "value": "110106197509161951"}), {}),
        (query_body(creds, subject={"type": "id_card", "value": "١١٠١٠٦١٩٧٥٠٩١٦١٩٥X"}), {}),
        (query_body(creds, subject={"type": "id_card", "value": "11010619750916195²"}), {}),
        (query_body(creds, fields=["公民身份号码"]), {}),
        (query_body(creds, fields=["不存在的信息项"]), {}),
    ]


async def send(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any], extra: dict[str, str]
) -> tuple[int, str]:
    response = await client.post("/v1/exchange/queries", json=body, headers={**headers, **extra})
    assert response.status_code < 500, response.text
    rid = response.json().get("request_id") if response.status_code >= 400 else response.headers["x-request-id"]
    assert rid and len(rid) <= 64, rid
    return response.status_code, rid


async def test_every_answer_and_denial_has_exactly_one_audit_record(distributed: Stack) -> None:
    stack, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=60.0) as client:
        other = await second_system(client, stack, creds)
        first_headers, other_headers = await system_token(client, creds), await system_token(client, other)
        # The second system's grant travels as an event: wait until it answers.
        deadline = time.monotonic() + 20
        while (
            await client.post("/v1/exchange/queries", json=query_body(other), headers=other_headers)
        ).status_code != 200:
            assert time.monotonic() < deadline, "the second system's grant never reached the exchange"
            await asyncio.sleep(0.3)
        sends = [send(client, first_headers, b, h) for b, h in hostile_mix(creds)]
        sends += [send(client, other_headers, b, h) for b, h in hostile_mix(other)]
        results = await asyncio.gather(*sends)
        statuses = {status for status, _ in results}
        assert 200 in statuses and statuses & {403, 404, 422}, statuses
        expected = [rid for status, rid in results if status in AUDITED]

        auditor = await person_token(client, "auditor")
        deadline = time.monotonic() + 30
        while True:
            found = await client.get("/v1/audit/events", params={"limit": 1000}, headers=auditor)
            assert found.status_code == 200, found.text
            counts: dict[str, int] = {}
            for record in found.json()["items"]:
                counts[record["request_id"]] = counts.get(record["request_id"], 0) + 1
            if all(rid in counts for rid in expected) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert {rid: counts.get(rid, 0) for rid in expected} == dict.fromkeys(expected, 1)
        verify = await client.get("/v1/audit/verify", headers=auditor)
        assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text

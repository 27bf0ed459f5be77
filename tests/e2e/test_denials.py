"""Bad input gets a clear problem+json and writes nothing but the audit record of the denial;
a provider that is down gives 504, and its late reply is recorded when it comes back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from services.common.keywrap import KeyWrap
from services.demo import DemoCredentials
from services.gateway import keys
from tests.e2e.client import (
    person_token,
    publish_unconditional_resource,
    query_body,
    system_token,
    wait_for_audit,
)
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]


@pytest.fixture
async def client(distributed: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=distributed[1].gateway, timeout=30.0) as c:
        yield c


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    return {
        "queries": await db.fetchval("SELECT count(*) FROM exchange.queries"),
        "departments": await db.fetchval("SELECT count(*) FROM gateway.departments"),
    }


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["type"].endswith("/" + code), body
    assert body["title"]
    assert body["detail"]
    assert body["request_id"]
    return body


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"resource": "999999/000001"}, 404, "unknown-resource"),
        ({"purpose": "OTHER-ITEM"}, 403, "purpose-not-granted"),
        ({"fields": ["公民身份号码"]}, 403, "item-not-granted"),
        ({"subject": {"type": "id_card", "value": "110106197509161951"}}, 422, "invalid-subject"),
        ({"subject": {"type": "id_card", "value": "11010619750916"}}, 422, "invalid-subject"),
        # Digits that are not ASCII: Arabic-Indic, and a superscript (NFKC would make it a 2).
        ({"subject": {"type": "id_card", "value": "١١٠١٠٦١٩٧٥٠٩١٦١٩٥X"}}, 422, "invalid-subject"),
        ({"subject": {"type": "id_card", "value": "11010619750916195²"}}, 422, "invalid-subject"),
        # A valid check digit, but a region code (110199) that GB/T 2260 never had.
        ({"subject": {"type": "id_card", "value": "110199197509161953"}}, 422, "invalid-subject"),
    ],
)
async def test_query_denials_are_audited_and_write_nothing_else(
    distributed: Stack,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    overrides: dict[str, Any],
    status: int,
    code: str,
) -> None:
    creds = distributed[1]
    headers = await system_token(client, creds)
    before = await counts(db)
    response = await client.post("/v1/exchange/queries", json=query_body(creds, **overrides), headers=headers)
    problem = assert_problem(response, status, code)
    assert await counts(db) == before
    # The one write: the denial's audit record, found by the request id the problem carries.
    auditor = await person_token(client, "auditor")
    deadline = time.monotonic() + 20
    while True:
        found = await client.get("/v1/audit/events", params={"outcome": "denied", "limit": 50}, headers=auditor)
        records = [r for r in found.json()["items"] if r["request_id"] == problem["request_id"]]
        if records or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert len(records) == 1
    assert records[0]["reason"] == code
    assert records[0]["consumer_client_id"] == creds.client_id


async def test_no_grant(distributed: Stack, client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    creds = distributed[1]
    code = await publish_unconditional_resource(client, "居民婚姻登记信息", "101020", "婚姻状况", 10)
    headers = await system_token(client, creds)
    before = await counts(db)
    # The new resource reaches the exchange as an event; until then it is unknown, after it, not granted.
    deadline = time.monotonic() + 20
    while True:
        response = await client.post("/v1/exchange/queries", json=query_body(creds, resource=code), headers=headers)
        if response.status_code == 403 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert_problem(response, 403, "no-grant")
    assert await counts(db) == before


async def test_bad_credit_code_creates_no_department(
    distributed: Stack, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    wrong_password = await client.post("/v1/auth/login", json={"username": "gaj_admin", "password": "x" * 8})
    assert_problem(wrong_password, 401, "invalid-credentials")
    before = await counts(db)
    # A data administrator may not create departments at all: refused at the edge, before the body is read.
    data_admin = await person_token(client, "gaj_admin")
    wrong_check = {"code": "111101000000198609", "name": "某局", "region_code": "110101", "level": "city"}
    assert_problem(await client.post("/v1/departments", json=wrong_check, headers=data_admin), 403, "forbidden")
    # The platform administrator, who may, gets each mistake explained.
    login = await client.post("/v1/auth/login", json={"username": "admin", "password": distributed[1].admin_password})
    assert login.status_code == 200, login.text
    admin = {"authorization": f"Bearer {login.json()['access_token']}"}
    body = assert_problem(await client.post("/v1/departments", json=wrong_check, headers=admin), 422, "validation")
    assert "check character" in body["detail"]
    # GB/T 2260: a region code that never existed, and one that disagrees with the credit code.
    no_region = {"code": "111101000000198608", "name": "某局", "region_code": "110199", "level": "city"}
    assert_problem(await client.post("/v1/departments", json=no_region, headers=admin), 422, "validation")
    elsewhere = {"code": "111101000000198608", "name": "某局", "region_code": "310101", "level": "city"}
    assert_problem(await client.post("/v1/departments", json=elsewhere, headers=admin), 422, "validation")
    assert await counts(db) == before


async def test_missing_expired_and_forged_tokens(
    distributed: Stack, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    creds = distributed[1]
    before = await counts(db)
    assert_problem(await client.post("/v1/exchange/queries", json=query_body(creds)), 401, "unauthorized")
    # The signing key, as only someone holding the key-encryption key could read it (it is sealed at rest).
    row = await db.fetchrow("SELECT kid, sealed_private_jwk FROM gateway.signing_keys WHERE state = 'current'")
    sealed = KeyWrap(distributed[0].key_encryption_key).open(row["sealed_private_jwk"], keys.context(row["kid"]))
    key = ECKey.import_key(json.loads(sealed))
    now = int(time.time())
    claims = {
        "iss": "tongban",
        "aud": "tongban",
        "sub": creds.client_id,
        "client_id": creds.client_id,
        "principal_type": "system",
        "dept": "11110100000013020B",
        "roles": ["consumer"],
        "iat": now - 7200,
        "exp": now - 3600,
        "jti": "x",
    }
    expired = jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)
    response = await client.post(
        "/v1/exchange/queries", json=query_body(creds), headers={"authorization": f"Bearer {expired}"}
    )
    assert_problem(response, 401, "unauthorized")
    other_key = ECKey.generate_key("P-256", parameters={"kid": key.kid}, private=True)
    forged = jwt.encode({"alg": "ES256", "kid": key.kid}, {**claims, "exp": now + 600}, other_key)
    response = await client.post(
        "/v1/exchange/queries", json=query_body(creds), headers={"authorization": f"Bearer {forged}"}
    )
    assert_problem(response, 401, "unauthorized")
    assert await counts(db) == before


async def test_body_over_limit(distributed: Stack, client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    creds = distributed[1]
    headers = await system_token(client, creds)
    before = await counts(db)
    huge = query_body(creds, padding="x" * 70_000)
    assert_problem(await client.post("/v1/exchange/queries", json=huge, headers=headers), 413, "body-too-large")
    assert await counts(db) == before


async def test_connector_down_gives_504_and_late_reply_is_recorded(
    distributed: Stack, client: httpx.AsyncClient
) -> None:
    stack, creds = distributed
    headers = await system_token(client, creds)
    stack.stop("connector", kill=True)
    try:
        response = await client.post("/v1/exchange/queries", json=query_body(creds, timeout_ms=1500), headers=headers)
        query_id = assert_problem(response, 504, "provider-timeout")["query_id"]
    finally:
        stack.start_service("connector")
        await stack.wait_ready("connector")
    deadline = time.monotonic() + 30
    while True:
        late = await client.get(f"/v1/exchange/queries/{query_id}", headers=headers)
        if late.json().get("status") == "late_reply" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert late.status_code == 200, late.text
    assert late.json()["status"] == "late_reply"
    assert late.json()["data"]["姓名"].endswith("*")
    auditor = await person_token(client, "auditor")
    timed_out = await wait_for_audit(client, auditor, query_id, "timeout")
    late_record = await wait_for_audit(client, auditor, query_id, "late_reply")
    # The late reply's event names the subject key of the query, as the timeout's does (not "").
    assert timed_out["subject_key_id"] and late_record["subject_key_id"] == timed_out["subject_key_id"]
    again = await client.post("/v1/exchange/queries", json=query_body(creds), headers=headers)
    assert again.status_code == 200, again.text  # nothing crashed


async def test_full_width_digits_name_the_same_person(distributed: Stack, client: httpx.AsyncClient) -> None:
    """全角 digits (as a Chinese input method types them) are folded before the check and the hash:
    one person has exactly one subject hash in the audit trail, however the number was typed."""
    creds = distributed[1]
    headers = await system_token(client, creds)
    wide = creds.subject.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789X"})
    assert wide != creds.subject
    ascii_answer = await client.post("/v1/exchange/queries", json=query_body(creds), headers=headers)
    wide_answer = await client.post(
        "/v1/exchange/queries", json=query_body(creds, subject={"type": "id_card", "value": wide}), headers=headers
    )
    assert ascii_answer.status_code == wide_answer.status_code == 200, wide_answer.text
    assert wide_answer.json()["data"] == ascii_answer.json()["data"]
    auditor = await person_token(client, "auditor")
    first = await wait_for_audit(client, auditor, ascii_answer.json()["id"], "completed")
    second = await wait_for_audit(client, auditor, wide_answer.json()["id"], "completed")
    assert first["subject_hash"] == second["subject_hash"]

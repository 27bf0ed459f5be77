"""A consuming department's view of the platform, over HTTP, as the README walkthrough plays it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
from jwcrypto.jwk import JWK  # type: ignore[import-untyped]
from sd_jwt.verifier import SDJWTVerifier  # type: ignore[import-untyped]

from services.demo import DEMO_PASSWORD, DemoCredentials


async def system_token(client: httpx.AsyncClient, creds: DemoCredentials) -> dict[str, str]:
    response = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "consumer"
    return {"authorization": f"Bearer {body['access_token']}"}


async def person_token(client: httpx.AsyncClient, username: str) -> dict[str, str]:
    response = await client.post("/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD})
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['access_token']}"}


async def publish_unconditional_resource(
    client: httpx.AsyncClient, name: str, category: str, item: str, length: int
) -> str:
    """市公安局's data administrator submits a one-item, unconditionally shared resource, and the
    platform's reviewer publishes it; its code."""
    police = await person_token(client, "gaj_admin")
    resource = {
        "name": name,
        "summary": name,
        "category": category,
        "classification": "basic",
        "items": [{"name": item, "data_type": "C", "length": length}],
        "share": {"type": "unconditional"},
        "update_cycle": "实时",
    }
    created = await client.post("/v1/registry/resources", json=resource, headers=police)
    assert created.status_code == 201, created.text
    code = str(created.json()["code"])
    submitted = await client.post(f"/v1/registry/resources/{code}/submit", headers=police)
    assert submitted.status_code == 200, submitted.text
    reviewer = await person_token(client, "reviewer")
    published = await client.post(f"/v1/registry/resources/{code}/publish", headers=reviewer)
    assert published.status_code == 200, published.text
    return code


async def apply_for(
    client: httpx.AsyncClient, system: dict[str, str], creds: DemoCredentials, code: str, item: str, **terms: Any
) -> dict[str, Any]:
    """The demo consumer system applies for ``item`` of resource ``code``; ``terms`` are the
    application's other fields (``purpose`` as a service item code, ``daily_quota``…). The answer."""
    purpose = {"service_item": terms.pop("purpose")}
    application = {"resource": code, "client_id": creds.client_id, "items": [item], "purpose": purpose, **terms}
    response = await client.post("/v1/registry/applications", json=application, headers=system)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def past_rotation_grace(db: asyncpg.Connection) -> None:
    """Make the last signing-key rotation of the session's shared stack look older than the tokens'
    lifetime, as time would: a test that rotates the key may then do so whatever other test rotated
    it earlier in the run (the gateway refuses a rotation while the previous key's tokens may be
    valid — ``rotation-too-soon``)."""
    await db.execute(
        "UPDATE gateway.signing_keys SET state_since = state_since - interval '1 day' WHERE state = 'previous'"
    )


def query_body(creds: DemoCredentials, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resource": creds.resource,
        "purpose": creds.purpose,
        "subject": {"type": "id_card", "value": creds.subject},
    }
    body.update(overrides)
    return body


async def audit_records(client: httpx.AsyncClient, auditor: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/audit/events", params=filters, headers=auditor)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def wait_for_audit(
    client: httpx.AsyncClient, auditor: dict[str, str], query_id: str, outcome: str, timeout_s: float = 20.0
) -> dict[str, Any]:
    """Audit consumes events from Kafka: poll until the record for ``query_id`` is there."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        # Only the exchange's queries: each poll is a search, itself recorded (outcome completed).
        found = await audit_records(client, auditor, type="exchange.query", outcome=outcome, limit="200")
        for record in found:
            if record["query_id"] == query_id:
                return record
        assert asyncio.get_running_loop().time() < deadline, f"no {outcome} audit record for {query_id}"
        await asyncio.sleep(0.3)


async def walkthrough(creds: DemoCredentials) -> None:
    """The README walkthrough: token, query, masked answer, the audit record as the auditor."""
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        headers = await system_token(client, creds)
        response = await client.post(
            "/v1/exchange/queries", json=query_body(creds), headers={**headers, "Idempotency-Key": "walkthrough-1"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["status"] == "completed"
        assert answer["resource"] == creds.resource
        assert set(answer["data"]) == {"姓名", "出生日期", "户籍地址"}  # only the granted items
        assert answer["masked"] == ["姓名"]
        name = answer["data"]["姓名"]
        assert len(name) >= 2 and set(name[1:]) == {"*"}, name  # surname kept, given name masked
        assert answer["data"]["出生日期"] == f"{creds.subject[6:10]}-{creds.subject[10:12]}-{creds.subject[12:14]}"
        assert answer["signature"]["alg"] == "EdDSA" and answer["signature"]["value"]
        # 可验证应答: the provider's SD-JWT, checked by an independent RFC 9901 implementation with
        # the key the platform serves; the masked name's disclosure is not in it.
        keys = await client.get(f"/v1/exchange/providers/{answer['provider']}/jwks", headers=headers)
        assert keys.status_code == 200, keys.text
        jwks = {k["kid"]: k for k in keys.json()["keys"]}
        signed = SDJWTVerifier(answer["sd_jwt"], lambda issuer, header: JWK(**jwks[header["kid"]]))
        claims = signed.get_verified_payload()
        assert {k: claims[k] for k in ("出生日期", "户籍地址")} == {
            k: answer["data"][k] for k in ("出生日期", "户籍地址")
        }
        assert "姓名" not in claims and claims["query_id"] == answer["id"] and claims["resource"] == creds.resource

        again = await client.post(
            "/v1/exchange/queries", json=query_body(creds), headers={**headers, "Idempotency-Key": "walkthrough-1"}
        )
        assert again.status_code == 200 and again.json()["id"] == answer["id"]  # same key, same answer
        other = await client.post(
            "/v1/exchange/queries",
            json={**query_body(creds), "fields": ["姓名"]},
            headers={**headers, "Idempotency-Key": "walkthrough-1"},
        )
        assert other.status_code == 422, other.text  # same key, another question: refused
        assert other.json()["type"].endswith("/idempotency-key-reused"), other.text

        auditor = await person_token(client, "auditor")
        record = await wait_for_audit(client, auditor, answer["id"], "completed")
        assert record["consumer_client_id"] == creds.client_id
        assert record["purpose"] == creds.purpose
        assert record["fields"] == ["姓名", "出生日期", "户籍地址"]
        assert record["answer_sha256"] == answer["sd_jwt_sha256"]
        assert record["disclosed_fields"] == ["出生日期", "户籍地址"]
        assert creds.subject not in str(record)  # never in clear
        by_subject = await audit_records(client, auditor, subject=creds.subject)
        assert any(r["query_id"] == answer["id"] for r in by_subject)  # matched by keyed hash
        verify = await client.get("/v1/audit/verify", headers=auditor)
        assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text

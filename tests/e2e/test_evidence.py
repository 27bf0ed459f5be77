"""免提交 end to end: the registry publishes a resource and a service item whose materials map to
it, the consumer's application is granted, and the consumer fetches the evidence bundle through
the gateway — every service its own process, real Kafka and PostgreSQL between them."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx

from services.demo import DemoCredentials
from tests.e2e.client import apply_for, audit_records, person_token, publish_unconditional_resource, system_token
from tests.e2e.test_denials import assert_problem
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]


async def test_a_consumer_fetches_a_service_items_materials_in_one_call(distributed: Stack) -> None:
    _, creds = distributed
    item = f"E2E-MSZ-{secrets.token_hex(4).upper()}"  # 事项编码, fresh per run
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        code = await publish_unconditional_resource(client, "居民身份核验", "101030", "姓名", 50)
        civil = await person_token(client, "mzj_admin")
        registered = await client.post(
            "/v1/registry/service-items",
            json={
                "code": item,
                "name": "最低生活保障审批（端到端）",
                "materials": [
                    {"name": "居民身份证明", "source": "government", "resource": code, "items": ["姓名"]},
                    {"name": "收入证明", "source": "government"},
                    {"name": "最低生活保障申请书", "source": "applicant"},
                ],
            },
            headers=civil,
        )
        assert registered.status_code == 201, registered.text
        system = await system_token(client, creds)
        granted = await apply_for(client, system, creds, code, "姓名", purpose=item)
        assert granted["status"] == "approved"  # unconditional: granted at once

        asked = {"service_item": item, "subject": {"type": "id_card", "value": creds.subject}}
        # The service item and the grant reach the exchange as registry events: until both have,
        # the bundle is refused (unknown-service-item) or its material denied (no-grant).
        deadline = time.monotonic() + 30
        while True:
            response = await client.post("/v1/exchange/evidence", json=asked, headers=system)
            if response.status_code == 200 and response.json()["exempt"] == 1:
                break
            assert response.status_code in (200, 404), response.text
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.3)
        bundle: dict[str, Any] = response.json()
        assert (bundle["materials_total"], bundle["government_issued"], bundle["exempt"]) == (3, 2, 1)
        outcomes = {m["name"]: m for m in bundle["materials"]}
        fetched, unmapped = outcomes["居民身份证明"], outcomes["收入证明"]
        assert fetched["outcome"] == "fetched" and set(fetched["answer"]["data"]) == {"姓名"}
        assert fetched["answer"]["status"] == "completed" and fetched["answer"]["resource"] == code
        assert unmapped["outcome"] == "unavailable"
        assert unmapped["problem"]["type"].endswith("/material-not-mapped")

        # Readable by id afterwards, by the system that asked only.
        again = await client.get(f"/v1/exchange/evidence/{bundle['id']}", headers=system)
        assert again.status_code == 200, again.text
        assert again.json()["materials"] == bundle["materials"]
        hidden = await client.get(f"/v1/exchange/evidence/{bundle['id']}", headers=civil)
        assert_problem(hidden, 404, "not-found")

        unknown = await client.post(
            "/v1/exchange/evidence", json={**asked, "service_item": f"{item}-NONE"}, headers=system
        )
        assert_problem(unknown, 404, "unknown-service-item")

        # Audit: the fetched material's query record, and the bundle's record naming it.
        auditor = await person_token(client, "auditor")
        deadline = time.monotonic() + 30
        while True:
            records = await audit_records(client, auditor, purpose=item, limit="200")
            by_query = {r["query_id"]: r for r in records}
            if bundle["id"] in by_query and fetched["query_id"] in by_query:
                break
            assert time.monotonic() < deadline, records
            await asyncio.sleep(0.3)
        evidence = by_query[bundle["id"]]
        assert (evidence["action"], evidence["outcome"], evidence["fields"]) == (
            "exchange.evidence",
            "completed",
            [fetched["query_id"]],
        )
        query = by_query[fetched["query_id"]]
        assert (query["action"], query["outcome"], query["resource_code"]) == ("exchange.query", "completed", code)
        assert query["subject_hash"] == evidence["subject_hash"]

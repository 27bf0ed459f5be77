"""A catalogue entry's next version, end to end: 市公安局 edits its published 居民户籍信息, which
drafts version 2 while queries keep being answered on version 1; the platform's reviewer publishes
version 2, and the exchange's projection moves to it. Also the classification tree and the
refusals an edit meets, as a client sees them over HTTP."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx

from services.demo import DemoCredentials
from tests.e2e.client import person_token, query_body, system_token
from tests.e2e.test_denials import assert_problem
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]
NEW_SUMMARY = "常住人口户籍登记信息（第二版）：姓名、性别、出生日期、户籍地址、公民身份号码。"


async def projected_version(db: asyncpg.Connection, code: str) -> int:
    return int(await db.fetchval("SELECT version FROM exchange.resources WHERE code = $1", code))


async def test_a_published_entry_is_edited_as_version_2_while_version_1_serves(
    distributed: Stack, db: asyncpg.Connection
) -> None:
    _, creds = distributed
    code = creds.resource
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        police = await person_token(client, "gaj_admin")
        reviewer = await person_token(client, "reviewer")
        system = await system_token(client, creds)
        before = (await client.get(f"/v1/registry/resources/{code}", headers=police)).json()
        assert before["status"] == "published"
        serving_version = before["version"]

        draft = await client.patch(
            f"/v1/registry/resources/{code}", json={"summary": NEW_SUMMARY, "update_cycle": "每日"}, headers=police
        )
        assert draft.status_code == 200, draft.text
        assert (draft.json()["version"], draft.json()["status"]) == (serving_version + 1, "draft")

        # The published version keeps serving: the entry, the exchange's projection and queries.
        shown = (await client.get(f"/v1/registry/resources/{code}", headers=police)).json()
        assert (shown["version"], shown["summary"]) == (serving_version, before["summary"])
        answered = await client.post("/v1/exchange/queries", json=query_body(creds), headers=system)
        assert answered.status_code == 200, answered.text
        assert await projected_version(db, code) == serving_version

        # The provider cannot publish its own change; the reviewer can once it is submitted.
        assert_problem(await client.post(f"/v1/registry/resources/{code}/publish", headers=police), 403, "forbidden")
        assert_problem(
            await client.post(f"/v1/registry/resources/{code}/publish", headers=reviewer), 409, "invalid-state"
        )
        submitted = await client.post(f"/v1/registry/resources/{code}/submit", headers=police)
        assert (submitted.status_code, submitted.json()["status"]) == (200, "submitted")
        assert_problem(
            await client.patch(f"/v1/registry/resources/{code}", json={"summary": "审核中修改"}, headers=police),
            409,
            "invalid-state",
        )
        published = await client.post(f"/v1/registry/resources/{code}/publish", headers=reviewer)
        assert published.status_code == 200, published.text
        assert (published.json()["version"], published.json()["summary"]) == (serving_version + 1, NEW_SUMMARY)

        deadline = time.monotonic() + 20
        while await projected_version(db, code) != serving_version + 1:  # resource_published travels as an event
            assert time.monotonic() < deadline, "the exchange never saw version 2"
            await asyncio.sleep(0.3)
        answered = await client.post("/v1/exchange/queries", json=query_body(creds), headers=system)
        assert answered.status_code == 200, answered.text

        history = (await client.get(f"/v1/registry/resources/{code}/versions", headers=system)).json()["items"]
        assert [(v["version"], v["status"]) for v in history[-2:]] == [
            (serving_version, "superseded"),
            (serving_version + 1, "published"),
        ]
        changes = {c["field"]: c["after"] for c in history[-1]["changes"]}
        assert changes == {"summary": NEW_SUMMARY, "update_cycle": "每日"}


async def test_the_classification_and_the_refusals_of_the_catalogue(distributed: Stack, db: asyncpg.Connection) -> None:
    _, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        police = await person_token(client, "gaj_admin")
        tree = (await client.get("/v1/registry/classification", headers=police)).json()
        assert [c["name"] for c in tree["classes"]] == ["基础信息资源", "主题信息资源", "部门信息资源"]
        assert tree["classes"][0]["children"][0]["children"][0] == {
            "code": "101010",
            "name": "户籍登记",
            "level": "目",
            "kind": "basic",
            "children": [],
        }

        before = await db.fetchval("SELECT count(*) FROM registry.resources")
        entry = {
            "name": "居民户籍信息",
            "summary": "户籍",
            "category": "109010",
            "classification": "basic",
            "items": [{"name": "出生日期", "data_type": "D", "length": 8}],
            "share": {"type": "unconditional"},
            "update_cycle": "实时",
        }
        unknown = assert_problem(
            await client.post("/v1/registry/resources", json=entry, headers=police), 422, "unknown-category"
        )
        assert {"code": "101010", "name": "基础信息资源/人口/户籍登记"} in unknown["valid_categories"]
        entry["category"] = "101010"
        entry["items"] = [{"name": "出生日期", "data_type": "D", "length": 10}]  # a date is 8 long
        too_long = assert_problem(
            await client.post("/v1/registry/resources", json=entry, headers=police), 422, "validation"
        )
        assert "数据类型 D" in too_long["detail"]
        entry["items"] = [{"name": "出生日期", "data_type": "D", "length": 8}]
        entry["related_codes"] = ["101010/999999"]
        missing = assert_problem(
            await client.post("/v1/registry/resources", json=entry, headers=police), 422, "unknown-related"
        )
        assert missing["missing"] == ["101010/999999"]
        assert_problem(
            await client.patch(f"/v1/registry/resources/{creds.resource}", json={"category": "201010"}, headers=police),
            422,
            "validation",
        )
        assert await db.fetchval("SELECT count(*) FROM registry.resources") == before

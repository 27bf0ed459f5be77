"""库表共享 end to end: a provider's connector, configured with a change feed over a table of its
database, publishes the rows it sees change; the demo consumer system reads them through the
gateway — granted items only, masked — waits for the next change, and each change it read is an
audit record with its subject (keyed hash, never the identifier), so the person's report (数据使用记录)
lists the feed read. A changed cursor is a problem+json."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.connector.service import synthetic_residents
from services.demo import DemoCredentials
from tests.e2e.client import audit_records, person_token, system_token
from tests.e2e.test_denials import assert_problem
from tests.stack import DistributedStack, free_port

Stack = tuple[DistributedStack, DemoCredentials]
PEOPLE = synthetic_residents(5, seed=7)
BACKENDS = """
default = "demo"

[backends.demo]
type = "demo"
resources = []

[backends.rkk]
type = "sql"
resources = []
url = "{url}"
query = "SELECT xm FROM feed_e2e.rk WHERE sfzh = :subject"
[backends.rkk.columns]
sfzh = "公民身份号码"
xm = "姓名"
xb = "性别"
dz = "户籍地址"

[feeds."{resource}"]
backend = "rkk"
query = "SELECT sfzh, xm, xb, dz, gxsj FROM feed_e2e.rk WHERE gxsj > :watermark ORDER BY gxsj LIMIT :limit"
watermark = "gxsj"
subject = "sfzh"
start = 0
interval_s = 0.3
"""


async def add_rows(db: asyncpg.Connection, *people: Any) -> None:
    await db.executemany(
        "INSERT INTO feed_e2e.rk VALUES ($1, $2, $3, $4, nextval('feed_e2e.seq'))",
        [(p.id_number, p.name, p.gender, p.address) for p in people],
    )


@pytest.fixture
async def feed_connector(distributed: Stack, db: asyncpg.Connection, tmp_path: Path) -> AsyncIterator[None]:
    """A second connector of the demo provider (requests are shared with the first, answered from
    the same demo data) whose backend file adds the change feed of the demo resource."""
    stack, creds = distributed
    await db.execute("CREATE SCHEMA feed_e2e")
    await db.execute("CREATE SEQUENCE feed_e2e.seq")  # the watermark: a change sequence
    await db.execute("CREATE TABLE feed_e2e.rk (sfzh text, xm text, xb text, dz text, gxsj bigint)")
    config = tmp_path / "backends.toml"
    config.write_text(BACKENDS.format(url=stack.database_url, resource=creds.resource), encoding="utf-8")
    port = free_port()
    stack.spawn(
        "connector-feeds",
        "services.connector",
        {"TONGBAN_CONNECTOR_PORT": str(port), "TONGBAN_CONNECTOR_BACKENDS": str(config)},
    )
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                process = stack.processes["connector-feeds"]
                assert process.poll() is None, f"the feed connector exited; see {stack.logs}"
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the feed connector is not ready"
                await asyncio.sleep(0.2)
        yield
    finally:
        stack.stop("connector-feeds")
        await db.execute("DROP SCHEMA feed_e2e CASCADE")


async def read_until(
    client: httpx.AsyncClient, url: str, purpose: str, headers: dict[str, str], count: int, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    changes: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while len(changes) < count:
        assert time.monotonic() < deadline, f"only {len(changes)} of {count} changes came"
        params = {"purpose": purpose, "wait": "5", **({"cursor": cursor} if cursor else {})}
        page = await client.get(url, params=params, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        changes, cursor = changes + body["changes"], body["cursor"]
    assert cursor is not None
    return changes, cursor


async def test_a_consumer_reads_a_providers_table_as_it_changes(
    distributed: Stack, db: asyncpg.Connection, feed_connector: None
) -> None:
    _, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        system = await system_token(client, creds)
        url = f"/v1/exchange/feeds/{creds.resource}"
        await add_rows(db, *PEOPLE[:2])
        first, cursor = await read_until(client, url, creds.purpose, system, 2)
        # 姓名/出生日期/户籍地址 granted, 姓名 masked: 性别 and 公民身份号码 never leave the exchange.
        assert sorted(c["data"]["户籍地址"] for c in first) == sorted(p.address for p in PEOPLE[:2])
        for change in first:
            assert set(change["data"]) == {"姓名", "户籍地址"} and change["masked"] == ["姓名"]
            assert change["op"] == "upsert" and "*" in change["data"]["姓名"]

        # Long-poll: a page waiting at the end wakes up with the next change.
        waiting = asyncio.create_task(
            client.get(url, params={"purpose": creds.purpose, "cursor": cursor, "wait": "20"}, headers=system)
        )
        await asyncio.sleep(1.0)
        assert not waiting.done()
        started = time.monotonic()
        await add_rows(db, PEOPLE[2])
        page = await asyncio.wait_for(waiting, 25)
        assert page.status_code == 200 and time.monotonic() - started < 10
        assert [c["data"]["户籍地址"] for c in page.json()["changes"]] == [PEOPLE[2].address]

        # Replay: the same cursor gives the same change again.
        again = await client.get(url, params={"purpose": creds.purpose, "cursor": cursor, "wait": "5"}, headers=system)
        assert again.json()["changes"] == page.json()["changes"]

        changed = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
        assert_problem(
            await client.get(url, params={"purpose": creds.purpose, "cursor": changed}, headers=system),
            400,
            "feed-cursor-invalid",
        )

        # One audit record per change read: two, the one that woke the long-poll, and its replay.
        auditor = await person_token(client, "auditor")
        deadline = time.monotonic() + 30
        while True:
            records = await audit_records(client, auditor, type="exchange.feed", client_id=creds.client_id, limit="200")
            if len(records) >= 4:
                break
            assert time.monotonic() < deadline, records
            await asyncio.sleep(0.5)
        assert len(records) == 4 and all(r["outcome"] == "completed" for r in records)
        assert all(r["fields"] == ["姓名", "户籍地址"] and r["subject_key_id"] for r in records)
        hashes = [r["subject_hash"] for r in records]
        assert len(set(hashes)) == 3 and all(len(h) == 64 for h in hashes)  # PEOPLE[2] read twice

        # The person's report lists the feed reads about them — who, when, which items — and not
        # another person's; the auditors' subject search finds them too.
        report = await client.get(
            "/v1/audit/subjects/accesses", params={"type": "id_card", "value": PEOPLE[2].id_number}, headers=auditor
        )
        assert report.status_code == 200, report.text
        reads = [i for i in report.json()["items"] if i["action"] == "exchange.feed"]
        assert len(reads) == 2 and len(report.json()["items"]) == 2  # the read and its replay, nothing else
        consumer_dept = records[0]["consumer_dept"]
        assert consumer_dept
        for read in reads:
            assert (read["consumer_dept"], read["consumer_client_id"]) == (consumer_dept, creds.client_id)
            assert (read["resource_code"], read["purpose"]) == (creds.resource, creds.purpose)
            assert read["fields"] == ["姓名", "户籍地址"] and read["occurred_at"] and read["outcome"] == "completed"
        # Each record is about one person: the subject searches split the four between the three.
        found = [
            {r["event_id"] for r in await audit_records(client, auditor, subject=p.id_number, type="exchange.feed")}
            for p in PEOPLE[:3]
        ]
        assert [len(f) for f in found] == [1, 1, 2]
        assert set().union(*found) == {r["event_id"] for r in records}

        # Audit holds the subjects only hashed: no text or bytes column of its tables holds one.
        columns = await db.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'audit' "
            "AND data_type IN ('text', 'character varying', 'ARRAY', 'jsonb', 'bytea')"
        )
        assert {c["column_name"] for c in columns} >= {"subject_hash", "fields", "reason"}
        for column in columns:
            name = f'audit."{column["table_name"]}"."{column["column_name"]}"'
            column_ref = f'"{column["column_name"]}"'
            if column["data_type"] == "bytea":
                condition = f"position(convert_to($1, 'UTF8') IN {column_ref}) > 0"
            else:
                condition = f"{column_ref}::text ILIKE '%' || $1 || '%'"
            for person in PEOPLE[:3]:
                count = await db.fetchval(
                    f'SELECT count(*) FROM audit."{column["table_name"]}" WHERE {condition}',  # noqa: S608
                    person.id_number,
                )
                assert count == 0, f"{name} holds a subject's identifier in clear"

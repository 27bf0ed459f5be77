"""The gateway's audit events reach the audit store (real gateway, Kafka and audit processes):
tokens issued and denied, sign-ins and failed sign-ins, a lockout and its unlock, and an
administrator's changes — each with the request id of the request it records."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.demo import DemoCredentials
from services.gateway.config import GatewaySettings
from tests.factories import DepartmentCreateFactory, UserCreateFactory
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]
LOCKOUT_THRESHOLD = GatewaySettings.model_fields["lockout_threshold"].default


@pytest.fixture
async def client(distributed: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=distributed[1].gateway, timeout=30.0) as c:
        yield c


@pytest.fixture
async def admin(client: httpx.AsyncClient, distributed: Stack) -> dict[str, str]:
    login = await client.post("/v1/auth/login", json={"username": "admin", "password": distributed[0].admin_password})
    assert login.status_code == 200, login.text
    return {"authorization": f"Bearer {login.json()['access_token']}"}


async def records(db: asyncpg.Connection, actor: str, count: int = 1, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The gateway's audit records of ``actor``, oldest first, once there are ``count`` of them
    (the audit service consumes them from Kafka)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await db.fetch(
            "SELECT action, outcome, reason, actor, consumer_dept, consumer_client_id, resource_code, purpose,"
            " fields, request_id FROM audit.records WHERE service = 'gateway' AND actor = $1 ORDER BY seq",
            actor,
        )
        if len(rows) >= count or time.monotonic() > deadline:
            return [dict(r) for r in rows]
        await asyncio.sleep(0.3)


async def test_tokens_issued_and_denied_are_audited(
    distributed: Stack, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    creds = distributed[1]
    issued = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret)
    )
    assert issued.status_code == 200
    request_id = issued.headers["x-request-id"]
    found = [r for r in await records(db, creds.client_id) if r["request_id"] == request_id]
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        found = [r for r in await records(db, creds.client_id) if r["request_id"] == request_id]
    [record] = found
    assert record["action"] == "gateway.token.issued" and record["outcome"] == "issued"
    assert record["consumer_client_id"] == creds.client_id and record["purpose"] == "client_secret_basic"
    assert record["fields"] == ["consumer"] and record["consumer_dept"]

    stranger = f"sys-{secrets.token_hex(8)}"
    denied = await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(stranger, "wrong"))
    assert denied.status_code == 401
    [record] = await records(db, stranger)
    assert record["action"] == "gateway.token.denied" and record["outcome"] == "denied"
    assert record["reason"] == "oauth2-invalid-client"
    assert record["request_id"] == denied.headers["x-request-id"]


async def test_sign_ins_lockout_unlock_and_admin_changes_are_audited(
    client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection
) -> None:
    department = DepartmentCreateFactory.build()
    assert (
        await client.post("/v1/departments", json=department.model_dump(mode="json"), headers=admin)
    ).status_code == 201
    person = UserCreateFactory.build(department=department.code, roles=["auditor"])
    created = await client.post("/v1/users", json=person.model_dump(mode="json"), headers=admin)
    assert created.status_code == 201, created.text

    signed_in = await client.post("/v1/auth/login", json={"username": person.username, "password": person.password})
    assert signed_in.status_code == 200
    for _ in range(LOCKOUT_THRESHOLD):
        await client.post("/v1/auth/login", json={"username": person.username, "password": "Wrong-password-1"})
    assert (await client.post(f"/v1/users/{person.username}/unlock", headers=admin)).status_code == 204

    # Events are keyed by their own id, so the store may receive them in any order: compared as a multiset.
    own = await records(db, person.username, count=2 + LOCKOUT_THRESHOLD)
    assert Counter((r["action"], r["outcome"], r["reason"]) for r in own) == Counter(
        {
            ("gateway.sign_in", "signed_in", ""): 1,
            ("gateway.sign_in", "denied", "invalid-credentials"): LOCKOUT_THRESHOLD - 1,
            ("gateway.sign_in", "denied", "account-locked"): 1,  # the attempt that locked the name
            ("gateway.lockout", "locked", ""): 1,
        }
    )
    [lockout] = [r for r in own if r["action"] == "gateway.lockout"]
    assert lockout["purpose"] == "person.lockout"

    changes = [
        r for r in await records(db, "admin", count=1) if r["resource_code"] in (department.code, person.username)
    ]
    deadline = time.monotonic() + 30
    while len(changes) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        changes = [r for r in await records(db, "admin") if r["resource_code"] in (department.code, person.username)]
    assert sorted((r["action"], r["purpose"], r["resource_code"]) for r in changes) == sorted(
        [
            ("gateway.identity.changed", "department.create", department.code),
            ("gateway.identity.changed", "user.create", person.username),
            ("gateway.unlock", "user.unlock", person.username),
        ]
    )


async def test_a_systems_lockout_its_rate_limit_and_its_departments_status_are_shown_and_audited(
    client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection
) -> None:
    """What the console's administration pages show comes from the API: a system's lockout (and
    its end), a department's status; and each change a platform administrator makes there is an
    audit record."""
    department = DepartmentCreateFactory.build()
    assert (
        await client.post("/v1/departments", json=department.model_dump(mode="json"), headers=admin)
    ).status_code == 201
    made = await client.post(
        f"/v1/departments/{department.code}/systems",
        json={"name": "锁定测试系统", "roles": ["consumer"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    client_id = made.json()["client_id"]
    assert (await client.get(f"/v1/systems/{client_id}", headers=admin)).json()["locked_until"] is None

    for _ in range(LOCKOUT_THRESHOLD):
        await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, "wrong"))
    locked = (await client.get(f"/v1/systems/{client_id}", headers=admin)).json()["locked_until"]
    assert locked is not None
    listed = await client.get("/v1/systems", params={"department": department.code}, headers=admin)
    assert [(s["client_id"], s["locked_until"]) for s in listed.json()["items"]] == [(client_id, locked)]
    assert (await client.post(f"/v1/systems/{client_id}/unlock", headers=admin)).status_code == 204
    assert (await client.get(f"/v1/systems/{client_id}", headers=admin)).json()["locked_until"] is None

    limit = {"rate_per_s": 5, "burst": 10}
    assert (await client.put(f"/v1/systems/{client_id}/rate-limit", json=limit, headers=admin)).status_code == 200
    assert (await client.delete(f"/v1/systems/{client_id}/rate-limit", headers=admin)).status_code == 204

    assert (await client.get(f"/v1/departments/{department.code}", headers=admin)).json()["status"] == "active"
    assert (await client.post(f"/v1/departments/{department.code}/disable", headers=admin)).status_code == 200
    assert (await client.get(f"/v1/departments/{department.code}", headers=admin)).json()["status"] == "disabled"

    wanted = [
        ("gateway.identity.changed", "department.create", department.code),
        ("gateway.identity.changed", "system.create.client_secret_basic", client_id),
        ("gateway.unlock", "system.unlock", client_id),
        ("gateway.identity.changed", "system.rate_limit.set", client_id),
        ("gateway.identity.changed", "system.rate_limit.reset", client_id),
        ("gateway.identity.changed", "department.disable", department.code),
    ]
    deadline = time.monotonic() + 30
    while True:
        changes = [r for r in await records(db, "admin") if r["resource_code"] in (department.code, client_id)]
        if len(changes) >= len(wanted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert sorted((r["action"], r["purpose"], r["resource_code"]) for r in changes) == sorted(wanted)

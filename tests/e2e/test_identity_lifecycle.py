"""Identity over HTTP, through the real gateway process and its database: a client secret is
rotated without downtime. Each test registers its own department, systems and people, so that the
demo's stay as the other tests expect them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from services.demo import DemoCredentials
from tests.e2e.test_denials import assert_problem
from tests.factories import DepartmentCreateFactory
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]


@pytest.fixture
async def client(distributed: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=distributed[1].gateway, timeout=30.0) as c:
        yield c


@pytest.fixture
async def admin(client: httpx.AsyncClient, distributed: Stack) -> dict[str, str]:
    """The platform administrator's headers."""
    login = await client.post("/v1/auth/login", json={"username": "admin", "password": distributed[0].admin_password})
    assert login.status_code == 200, login.text
    return {"authorization": f"Bearer {login.json()['access_token']}"}


@dataclass
class Registered:
    dept: str
    client_id: str
    client_secret: str


@pytest.fixture
async def registered(client: httpx.AsyncClient, admin: dict[str, str]) -> Registered:
    """A fresh department with one consumer system."""
    department = DepartmentCreateFactory.build()
    created = await client.post("/v1/departments", json=department.model_dump(mode="json"), headers=admin)
    assert created.status_code == 201, created.text
    system = await client.post(
        f"/v1/departments/{department.code}/systems",
        json={"name": "测试业务系统", "roles": ["consumer"]},
        headers=admin,
    )
    assert system.status_code == 201, system.text
    return Registered(department.code, system.json()["client_id"], system.json()["client_secret"])


async def token_status(client: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    return await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


# --------------------------------------------------------------------------- secret rotation


async def test_a_secret_is_rotated_without_downtime(
    client: httpx.AsyncClient, admin: dict[str, str], registered: Registered, db: asyncpg.Connection
) -> None:
    secrets_url = f"/v1/systems/{registered.client_id}/secrets"
    [old] = (await client.get(secrets_url, headers=admin)).json()["items"]

    added = await client.post(secrets_url, headers=admin)
    assert added.status_code == 201, added.text
    assert added.headers["cache-control"] == "no-store"  # the secret is in it, shown once
    new = added.json()
    assert (await token_status(client, registered.client_id, registered.client_secret)).status_code == 200
    assert (await token_status(client, registered.client_id, new["client_secret"])).status_code == 200
    listed = (await client.get(secrets_url, headers=admin)).json()["items"]
    assert [s["id"] for s in listed] == [new["id"], old["id"]]
    assert all(s["last_used_at"] for s in listed) and "client_secret" not in listed[0]

    before = await db.fetchval("SELECT count(*) FROM gateway.client_secrets")
    assert_problem(await client.post(secrets_url, headers=admin), 409, "too-many-secrets")
    assert await db.fetchval("SELECT count(*) FROM gateway.client_secrets") == before

    retired = await client.delete(f"{secrets_url}/{old['id']}", headers=admin)
    assert retired.status_code == 204, retired.text
    refused = await token_status(client, registered.client_id, registered.client_secret)
    assert_problem(refused, 401, "oauth2-invalid-client")
    assert (await token_status(client, registered.client_id, new["client_secret"])).status_code == 200
    assert_problem(await client.delete(f"{secrets_url}/{new['id']}", headers=admin), 409, "last-secret")

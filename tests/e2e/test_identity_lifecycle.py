"""Identity over HTTP, through the real gateway process and its database: a client secret is
rotated without downtime; a disabled system or person gets no new token, and introspection
(RFC 7662) says at once that its tokens are no longer active; repeated failures lock a person or a
client, counted by two gateway replicas together, until it ends or an administrator unlocks it. Each test registers its own department, systems and people, so that the
demo's stay as the other tests expect them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from services.demo import DEMO_PASSWORD, DemoCredentials
from services.gateway.config import GatewaySettings
from tests.e2e.test_denials import assert_problem
from tests.factories import DepartmentCreateFactory
from tests.stack import DistributedStack, free_port

Stack = tuple[DistributedStack, DemoCredentials]
# The stack's gateways run with the default lockout settings.
LOCKOUT_THRESHOLD = GatewaySettings.model_fields["lockout_threshold"].default
LOCKOUT_S = GatewaySettings.model_fields["lockout_s"].default


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


# --------------------------------------------------------------------------- disable, enable, introspection


async def introspect(client: httpx.AsyncClient, caller: Registered, token: str) -> dict[str, object]:
    response = await client.post(
        "/oauth2/introspect", data={"token": token}, auth=(caller.client_id, caller.client_secret)
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return dict(response.json())


async def test_a_disabled_system_gets_no_token_and_its_token_is_no_longer_active(
    client: httpx.AsyncClient, admin: dict[str, str], registered: Registered, distributed: Stack
) -> None:
    demo = distributed[1]
    checker = Registered("", demo.client_id, demo.client_secret)  # another system asks the gateway
    issued = await token_status(client, registered.client_id, registered.client_secret)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    assert (await introspect(client, checker, token))["client_id"] == registered.client_id

    disabled = await client.post(f"/v1/systems/{registered.client_id}/disable", headers=admin)
    assert disabled.status_code == 200, disabled.text
    assert disabled.json() == {"id": registered.client_id, "status": "disabled"}

    refused = await token_status(client, registered.client_id, registered.client_secret)
    body = assert_problem(refused, 400, "oauth2-unauthorized-client")
    assert body["error"] == "unauthorized_client"
    assert await introspect(client, checker, token) == {"active": False}
    # The token already issued still verifies at the services until it expires (15 minutes):
    # introspection is the way to know at once.
    assert (
        await client.get(f"/v1/systems/{registered.client_id}", headers={"authorization": f"Bearer {token}"})
    ).status_code == 200

    enabled = await client.post(f"/v1/systems/{registered.client_id}/enable", headers=admin)
    assert enabled.json()["status"] == "active"
    assert (await token_status(client, registered.client_id, registered.client_secret)).status_code == 200
    assert (await introspect(client, checker, token))["active"] is True


async def test_a_disabled_person_cannot_log_in(
    client: httpx.AsyncClient, admin: dict[str, str], registered: Registered, db: asyncpg.Connection
) -> None:
    person = {"username": f"e2e.{registered.client_id[-6:]}", "password": "Tongban-e2e-2026"}
    created = await client.post(
        "/v1/users", json={**person, "department": registered.dept, "roles": ["auditor"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    assert (await client.post("/v1/auth/login", json=person)).status_code == 200

    assert (await client.post(f"/v1/users/{person['username']}/disable", headers=admin)).status_code == 200
    assert_problem(await client.post("/v1/auth/login", json=person), 403, "account-disabled")
    assert_problem(
        await client.post("/v1/auth/login", json={**person, "password": "Wrong-e2e-2026"}), 401, "invalid-credentials"
    )

    assert (await client.post(f"/v1/departments/{registered.dept}/disable", headers=admin)).status_code == 200
    assert (await client.post(f"/v1/users/{person['username']}/enable", headers=admin)).status_code == 200
    assert_problem(await client.post("/v1/auth/login", json=person), 403, "account-disabled")  # its department still is
    assert_problem(
        await token_status(client, registered.client_id, registered.client_secret), 400, "oauth2-unauthorized-client"
    )

    assert (await client.post(f"/v1/departments/{registered.dept}/enable", headers=admin)).status_code == 200
    assert (await client.post("/v1/auth/login", json=person)).status_code == 200
    statuses = await db.fetch(
        "SELECT status FROM gateway.departments WHERE code = $1 UNION ALL "
        "SELECT status FROM gateway.users WHERE username = $2",
        registered.dept,
        person["username"],
    )
    assert [r["status"] for r in statuses] == ["active", "active"]


async def test_introspection_needs_an_authenticated_active_client(
    client: httpx.AsyncClient, admin: dict[str, str], registered: Registered
) -> None:
    token = (await token_status(client, registered.client_id, registered.client_secret)).json()["access_token"]

    anonymous = await client.post("/oauth2/introspect", data={"token": token})
    assert_problem(anonymous, 401, "oauth2-invalid-client")
    wrong = await client.post("/oauth2/introspect", data={"token": token}, auth=(registered.client_id, "wrong"))
    assert_problem(wrong, 401, "oauth2-invalid-client")
    assert_problem(
        await client.post("/oauth2/introspect", data={}, auth=(registered.client_id, registered.client_secret)),
        400,
        "oauth2-invalid-request",
    )
    assert_problem(
        await client.post(
            "/oauth2/introspect", json={"token": token}, auth=(registered.client_id, registered.client_secret)
        ),
        400,
        "oauth2-invalid-request",
    )
    assert await introspect(client, registered, "eyJhbGciOiJub25lIn0.e30.") == {"active": False}


async def test_the_metadata_lists_introspection(client: httpx.AsyncClient) -> None:
    metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    base = metadata["token_endpoint"].removesuffix("/oauth2/token")
    assert metadata["introspection_endpoint"] == f"{base}/oauth2/introspect"
    assert metadata["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic", "private_key_jwt"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "private_key_jwt"]
    assert metadata["grant_types_supported"] == ["client_credentials"]
    assert metadata["scopes_supported"] == ["citizen_portal", "consumer", "provider"]
    # private_key_jwt's assertions: asymmetric algorithms only.
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == ["ES256", "EdDSA", "RS256", "PS256"]


# --------------------------------------------------------------------------- lockout, password policy


async def test_wrong_passwords_on_two_replicas_lock_the_person_until_the_admin_unlocks(
    client: httpx.AsyncClient,
    admin: dict[str, str],
    registered: Registered,
    second_gateway: str,
    db: asyncpg.Connection,
) -> None:
    person = {"username": f"locked.{registered.client_id[-6:]}", "password": "Tongban-e2e-2026"}
    created = await client.post(
        "/v1/users", json={**person, "department": registered.dept, "roles": ["auditor"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    wrong = {**person, "password": "Wrong-e2e-2026"}

    async with httpx.AsyncClient(base_url=second_gateway, timeout=30.0) as other:
        replicas = [client, other]
        for attempt in range(LOCKOUT_THRESHOLD - 1):  # alternating: the count is shared
            assert_problem(await replicas[attempt % 2].post("/v1/auth/login", json=wrong), 401, "invalid-credentials")
        locked = await replicas[(LOCKOUT_THRESHOLD - 1) % 2].post("/v1/auth/login", json=wrong)
        assert_problem(locked, 429, "account-locked")
        assert 0 < int(locked.headers["retry-after"]) <= LOCKOUT_S
        for replica in replicas:  # the right password too, on either replica
            assert_problem(await replica.post("/v1/auth/login", json=person), 429, "account-locked")

    unlocked = await client.post(f"/v1/users/{person['username']}/unlock", headers=admin)
    assert unlocked.status_code == 204, unlocked.text
    assert (await client.post("/v1/auth/login", json=person)).status_code == 200
    assert await db.fetchval("SELECT count(*) FROM gateway.sign_in_failures WHERE name = $1", person["username"]) == 0


async def test_wrong_secrets_lock_the_client_until_unlocked(
    client: httpx.AsyncClient, admin: dict[str, str], registered: Registered
) -> None:
    for _ in range(LOCKOUT_THRESHOLD - 1):
        assert_problem(await token_status(client, registered.client_id, "wrong"), 401, "oauth2-invalid-client")
    locked = await token_status(client, registered.client_id, "wrong")
    body = assert_problem(locked, 429, "oauth2-client-locked")
    assert body["error"] == "invalid_client" and int(locked.headers["retry-after"]) > 0
    assert_problem(
        await token_status(client, registered.client_id, registered.client_secret), 429, "oauth2-client-locked"
    )

    person_token = await client.post("/v1/auth/login", json={"username": "auditor", "password": DEMO_PASSWORD})
    auditor = {"authorization": f"Bearer {person_token.json()['access_token']}"}
    assert_problem(await client.post(f"/v1/systems/{registered.client_id}/unlock", headers=auditor), 404, "not-found")

    assert (await client.post(f"/v1/systems/{registered.client_id}/unlock", headers=admin)).status_code == 204
    assert (await token_status(client, registered.client_id, registered.client_secret)).status_code == 200


async def test_a_weak_password_is_refused_and_nothing_is_written(
    client: httpx.AsyncClient, admin: dict[str, str], registered: Registered, db: asyncpg.Connection
) -> None:
    before = await db.fetchval("SELECT count(*) FROM gateway.users")
    body = {
        "username": "weak.password",
        "password": "tongbanpassword",
        "department": registered.dept,
        "roles": ["auditor"],
    }

    refused = assert_problem(await client.post("/v1/users", json=body, headers=admin), 422, "validation")

    assert "at least 12 characters" in json.dumps(refused, ensure_ascii=False)
    assert await db.fetchval("SELECT count(*) FROM gateway.users") == before


async def test_a_burst_of_wrong_attempts_on_two_replicas_is_counted_exactly_and_never_stalls(
    client: httpx.AsyncClient, second_gateway: str
) -> None:
    # Every failed attempt is counted under the name's row lock, after its request's transaction
    # rolled back, so no request holds two pooled connections: a burst larger than the pool (10)
    # neither loses a count nor waits for connections that its own requests hold. The attempts
    # counted once the name is locked answer account-locked.
    name = f"burst.{free_port()}"
    async with httpx.AsyncClient(base_url=second_gateway, timeout=60.0) as other:
        replicas = [client, other]
        same_name = [
            replicas[i % 2].post("/v1/auth/login", json={"username": name, "password": "Wrong-e2e-2026"})
            for i in range(2 * LOCKOUT_THRESHOLD)
        ]
        many_names = [
            replicas[i % 2].post("/v1/auth/login", json={"username": f"{name}.{i}", "password": "Wrong-e2e-2026"})
            for i in range(30)
        ]
        answers = await asyncio.gather(*same_name, *many_names)

    codes = [a.json()["type"].rsplit("/", 1)[1] for a in answers]
    assert sorted(codes[: len(same_name)]) == ["account-locked"] * (LOCKOUT_THRESHOLD + 1) + ["invalid-credentials"] * (
        LOCKOUT_THRESHOLD - 1
    )
    assert codes[len(same_name) :] == ["invalid-credentials"] * len(many_names)

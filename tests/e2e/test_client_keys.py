"""Keys over HTTP, through the real gateway process: a system registered with private_key_jwt
gets tokens with a stock OAuth2 client (authlib's OAuth2Session and PrivateKeyJWT, as in the
README); a replayed or misdirected assertion is refused; bad registrations write nothing; and
the token signing keys rotate — by the command and the admin endpoint — while the services behind
the gateway keep accepting the new tokens."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from joserfc.jwk import ECKey
from joserfc.jws import extract_compact

from services.demo import DemoCredentials
from tests.e2e.client import past_rotation_grace
from tests.e2e.test_denials import assert_problem
from tests.factories import DepartmentCreateFactory
from tests.stack import ROOT, DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]


@pytest.fixture
async def client(distributed: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=distributed[1].gateway, timeout=30.0) as c:
        yield c


@pytest.fixture
async def admin(client: httpx.AsyncClient, distributed: Stack) -> dict[str, str]:
    login = await client.post("/v1/auth/login", json={"username": "admin", "password": distributed[0].admin_password})
    assert login.status_code == 200, login.text
    return {"authorization": f"Bearer {login.json()['access_token']}"}


@pytest.fixture
async def department(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    body = DepartmentCreateFactory.build()
    created = await client.post("/v1/departments", json=body.model_dump(mode="json"), headers=admin)
    assert created.status_code == 201, created.text
    return body.code


def public_jwks(*keys: ECKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


async def register(client: httpx.AsyncClient, admin: dict[str, str], department: str, key: ECKey) -> str:
    created = await client.post(
        f"/v1/departments/{department}/systems",
        json={
            "name": "公积金业务系统",
            "roles": ["consumer"],
            "auth_method": "private_key_jwt",
            "jwks": public_jwks(key),
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["client_secret"] is None
    return str(created.json()["client_id"])


def form(assertion: str) -> dict[str, str]:
    """A client_credentials token request authenticated by ``assertion`` (private_key_jwt)."""
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    return {
        "systems": await db.fetchval("SELECT count(*) FROM gateway.systems"),
        "client_assertions": await db.fetchval("SELECT count(*) FROM gateway.client_assertions"),
        "signing_keys": await db.fetchval("SELECT count(*) FROM gateway.signing_keys"),
    }


async def test_a_stock_oauth2_client_gets_a_token_with_private_key_jwt(
    client: httpx.AsyncClient, admin: dict[str, str], department: str
) -> None:
    metadata = (await client.get("/.well-known/oauth-authorization-server")).json()
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert "ES256" in metadata["token_endpoint_auth_signing_alg_values_supported"]
    assert "none" not in metadata["token_endpoint_auth_signing_alg_values_supported"]
    token_endpoint = metadata["token_endpoint"]

    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    client_id = await register(client, admin, department, key)

    def fetch() -> dict[str, Any]:
        """What the README shows: authlib's OAuth2Session (requests) with PrivateKeyJWT."""
        with OAuth2Session(client_id, key, token_endpoint_auth_method="private_key_jwt") as oauth:
            oauth.register_client_auth_method(PrivateKeyJWT(token_endpoint, headers={"kid": "k1"}, alg="ES256"))
            return dict(oauth.fetch_token(token_endpoint, grant_type="client_credentials"))

    token = await asyncio.to_thread(fetch)
    assert token["token_type"] == "Bearer" and token["scope"] == "consumer"

    own = await client.get(f"/v1/systems/{client_id}", headers={"authorization": f"Bearer {token['access_token']}"})
    assert own.status_code == 200 and own.json()["auth_method"] == "private_key_jwt"

    # Introspection (RFC 7662) takes the same client authentication.
    assertion = private_key_jwt_sign(key, client_id, token_endpoint, alg="ES256", header={"kid": "k1"})
    introspected = await client.post(
        "/oauth2/introspect",
        data={
            "token": token["access_token"],
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )
    assert introspected.status_code == 200, introspected.text
    assert introspected.json()["active"] is True and introspected.json()["client_id"] == client_id


async def test_a_replayed_or_misdirected_assertion_is_refused_and_spends_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], department: str, db: asyncpg.Connection
) -> None:
    token_endpoint = (await client.get("/.well-known/oauth-authorization-server")).json()["token_endpoint"]
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    client_id = await register(client, admin, department, key)

    assertion = private_key_jwt_sign(key, client_id, token_endpoint, alg="ES256", header={"kid": "k1"})
    assert (await client.post("/oauth2/token", data=form(assertion))).status_code == 200

    before = await counts(db)
    replayed = assert_problem(await client.post("/oauth2/token", data=form(assertion)), 401, "oauth2-invalid-client")
    assert replayed["error"] == "invalid_client" and "used before" in replayed["error_description"]
    elsewhere = private_key_jwt_sign(key, client_id, token_endpoint.replace("/token", "/introspect"), alg="ES256")
    assert_problem(await client.post("/oauth2/token", data=form(elsewhere)), 401, "oauth2-invalid-client")
    both = await client.post("/oauth2/token", data=form(assertion), auth=(client_id, "secret"))
    assert_problem(both, 400, "oauth2-invalid-request")
    assert await counts(db) == before


async def test_an_assertion_sent_to_two_replicas_at_once_is_accepted_once(
    client: httpx.AsyncClient, admin: dict[str, str], department: str, second_gateway: str, db: asyncpg.Connection
) -> None:
    token_endpoint = (await client.get("/.well-known/oauth-authorization-server")).json()["token_endpoint"]
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    client_id = await register(client, admin, department, key)
    assertion = private_key_jwt_sign(key, client_id, token_endpoint, alg="ES256", header={"kid": "k1"})
    async with httpx.AsyncClient(base_url=second_gateway, timeout=30.0) as other:
        answers = await asyncio.gather(
            client.post("/oauth2/token", data=form(assertion)), other.post("/oauth2/token", data=form(assertion))
        )
    assert sorted(a.status_code for a in answers) == [200, 401], [a.text for a in answers]
    [refused] = [a for a in answers if a.status_code == 401]
    assert "used before" in assert_problem(refused, 401, "oauth2-invalid-client")["detail"]
    assert await db.fetchval("SELECT count(*) FROM gateway.client_assertions WHERE client_id = $1", client_id) == 1


async def test_bad_client_keys_are_refused_and_write_nothing(
    client: httpx.AsyncClient, admin: dict[str, str], department: str, db: asyncpg.Connection
) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    client_id = await register(client, admin, department, key)
    before = await counts(db)
    url = f"/v1/departments/{department}/systems"
    base = {"name": "公积金业务系统", "roles": ["consumer"], "auth_method": "private_key_jwt"}
    private = {**base, "jwks": {"keys": [key.as_dict(private=True)]}}
    assert (
        "private key material"
        in assert_problem(await client.post(url, json=private, headers=admin), 422, "validation")["detail"]
    )
    plain_http = {**base, "jwks_uri": "http://keys.example/jwks.json"}
    assert_problem(await client.post(url, json=plain_http, headers=admin), 422, "invalid-jwks-uri")
    neither = await client.post(url, json=base, headers=admin)
    assert_problem(neither, 422, "validation")
    jwks_url = f"/v1/systems/{client_id}/jwks"
    assert_problem(await client.put(jwks_url, json={"jwks": {"keys": []}}, headers=admin), 422, "validation")
    assert await counts(db) == before
    assert (await client.get(jwks_url, headers=admin)).json()["jwks"] == public_jwks(key)

    new = ECKey.generate_key("P-256", parameters={"kid": "k2"}, private=True)
    rotated = await client.put(jwks_url, json={"jwks": public_jwks(key, new)}, headers=admin)
    assert rotated.status_code == 200 and rotated.json()["jwks"] == public_jwks(key, new)


# --------------------------------------------------------------------------- token signing keys


async def wait_for_row(db: asyncpg.Connection, sql: str, *args: object, timeout_s: float = 30.0) -> asyncpg.Record:
    """The first row ``sql`` returns, once it returns one (the audit service consumes from Kafka)."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = await db.fetchrow(sql, *args)
        if row is not None or time.monotonic() > deadline:
            assert row is not None, sql
            return row
        await asyncio.sleep(0.3)


def gateway_command(stack: DistributedStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.gateway", *args],
        cwd=ROOT,
        env={**os.environ, **stack.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def kids(client: httpx.AsyncClient) -> list[str]:
    return [k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]]


async def test_signing_keys_rotate_with_an_overlap_by_command_and_endpoint(
    distributed: Stack, client: httpx.AsyncClient, admin: dict[str, str], db: asyncpg.Connection
) -> None:
    stack, creds = distributed
    await past_rotation_grace(db)
    listed = (await client.get("/v1/keys", headers=admin)).json()["items"]
    before = {k["state"]: k["kid"] for k in listed}
    assert set(before) >= {"current", "next"}

    rotated = gateway_command(stack, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert f"current  {before['next']}" in rotated.stdout

    # The running gateway takes the new ring within TONGBAN_KEY_REFRESH_S (10 s).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # The new ring: a new next key published beside the old current and next (not merely three
        # keys: a rotation earlier in the run leaves three published too).
        if set(await kids(client)) - set(before.values()):
            break
        await asyncio.sleep(0.5)
    published = await kids(client)
    assert len(published) == 3 and before["current"] in published and before["next"] in published
    audited = await wait_for_row(
        db,
        "SELECT actor FROM audit.records WHERE action = 'gateway.key.rotated' AND resource_code = $1",
        before["next"],
    )
    assert audited["actor"].startswith("cli:")

    # A person's new token is signed by the new current key, and the services behind accept it.
    login = await client.post("/v1/auth/login", json={"username": "admin", "password": stack.admin_password})
    access = login.json()["access_token"]
    assert extract_compact(access.encode()).headers()["kid"] == before["next"]
    through = await client.get("/v1/registry/resources", headers={"authorization": f"Bearer {access}"})
    assert through.status_code == 200, through.text
    # ... and a token signed before the rotation still works.
    assert (await client.get("/v1/keys", headers=admin)).status_code == 200

    # Again at once: refused, since tokens of the previous key may still be valid; nothing changes.
    keys_before = await counts(db)
    again = assert_problem(await client.post("/v1/keys/rotate", headers=admin), 409, "rotation-too-soon")
    assert again["detail"]
    assert await kids(client) == published and await counts(db) == keys_before
    refused = gateway_command(stack, "keys", "rotate")
    assert refused.returncode == 1 and "not rotated" in refused.stderr

    # A system may not rotate keys (BFLA).
    system = await client.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret)
    )
    consumer = {"authorization": f"Bearer {system.json()['access_token']}"}
    assert_problem(await client.post("/v1/keys/rotate", headers=consumer), 403, "forbidden")

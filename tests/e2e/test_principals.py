"""A token says whether it identifies a system or a person, and nothing guesses it from names.

Before, every service decided "is this a system?" by comparing ``client_id`` with ``sub``, and a
person's token carried ``client_id = username``: a user named like a system's client id read
that system's answers, and a data administrator could not apply for a system of their own
department.
"""

from __future__ import annotations

import base64
import json

import asyncpg
import httpx

from services.demo import CIVIL_AFFAIRS, DEMO_PASSWORD, DemoCredentials
from tests.e2e.client import person_token, query_body, system_token
from tests.e2e.test_denials import assert_problem
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]


def claims(headers: dict[str, str]) -> dict[str, object]:
    payload = headers["authorization"].split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def test_tokens_name_their_principal_type(distributed: Stack) -> None:
    creds = distributed[1]
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        system = claims(await system_token(client, creds))
        person = claims(await person_token(client, "mzj_admin"))
    assert system["principal_type"] == "system" and system["client_id"] == creds.client_id
    assert person["principal_type"] == "person" and "client_id" not in person


async def test_no_username_can_take_a_client_id(distributed: Stack, db: asyncpg.Connection) -> None:
    stack, creds = distributed
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        admin = {
            "authorization": f"Bearer {(await client.post('/v1/auth/login', json={'username': 'admin', 'password': stack.admin_password})).json()['access_token']}"
        }
        before = await db.fetchval("SELECT count(*) FROM gateway.users")
        body = {
            "username": creds.client_id,
            "password": DEMO_PASSWORD,
            "department": CIVIL_AFFAIRS["code"],
            "roles": ["auditor"],
        }
        response = await client.post("/v1/users", json=body, headers=admin)
        assert_problem(response, 422, "validation")
        assert await db.fetchval("SELECT count(*) FROM gateway.users") == before


async def test_a_person_never_reads_a_systems_query(distributed: Stack) -> None:
    creds = distributed[1]
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        system = await system_token(client, creds)
        answered = await client.post("/v1/exchange/queries", json=query_body(creds), headers=system)
        assert answered.status_code == 200, answered.text
        query_id = answered.json()["id"]
        assert (await client.get(f"/v1/exchange/queries/{query_id}", headers=system)).status_code == 200
        person = await person_token(client, "mzj_admin")  # same department, but a person
        assert_problem(await client.get(f"/v1/exchange/queries/{query_id}", headers=person), 404, "not-found")
        refused = await client.post("/v1/exchange/queries", json=query_body(creds), headers=person)
        assert_problem(refused, 403, "not-a-consumer")


async def test_a_data_admin_applies_for_a_system_of_their_department(distributed: Stack) -> None:
    creds = distributed[1]
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        person = await person_token(client, "mzj_admin")
        application = {
            "resource": creds.resource,
            "client_id": creds.client_id,
            "items": ["姓名"],
            "purpose": {"service_item": "PERSON-APPLIES"},
        }
        response = await client.post("/v1/registry/applications", json=application, headers=person)
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "pending" and response.json()["due_by"]
        other_dept = await person_token(client, "gaj_admin")  # the demo system is not theirs
        foreign = await client.post("/v1/registry/applications", json=application, headers=other_dept)
        assert_problem(foreign, 422, "unknown-client")

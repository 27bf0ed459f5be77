"""Helpers of the gateway's service tier."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.keywrap import KeyWrap, new_kek
from services.gateway.config import GatewaySettings
from services.gateway.service import Lockout
from tests.factories import DepartmentCreateFactory, SystemCreateFactory

KEK = new_kek()  # made per test run, as make run and the e2e stacks make theirs
SETTINGS = GatewaySettings(
    jwt_issuer="tongban-test",
    jwt_audience="tongban-test",
    token_ttl_s=900,
    key_encryption_key=KEK,
    public_url="https://gateway.test",
)
WRAP = KeyWrap(KEK)
PASSWORD = "Tongban-2026"  # meets the password policy

LOCKOUT_THRESHOLD = 3
LOCKOUT_S = 60


def lockout_on(session: AsyncSession, threshold: int = LOCKOUT_THRESHOLD, duration_s: int = LOCKOUT_S) -> Lockout:
    """A lockout whose own transactions are savepoints of the test's ``session``: rolled back with it."""
    sessions = async_sessionmaker(bind=session.bind, expire_on_commit=False, join_transaction_mode="create_savepoint")
    return Lockout(sessions, threshold, duration_s)


# --------------------------------------------------------------------------- two gateway replicas (fixture ``replicas``)

SOURCE_BURST = 10
TOKEN_BURST = 3
TOKEN_RATE = 0.25  # a token back every 4 s: none during a burst; recovery is seen within a test
API_BURST = 50
POLICY = re.compile(r'^"(api|token|login)";q=(\d+);w=(\d+)$')
REMAINING = re.compile(r'^"(api|token|login)";r=(\d+);t=(\d+)$')


@dataclass
class Replicas:
    settings: GatewaySettings
    dsn: str
    apps: list[FastAPI]

    def clients(self, source: str) -> list[httpx.AsyncClient]:
        """A client per replica, as seen from ``source`` (the peer address the gateway sees)."""
        return [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(source, 40000)), base_url="http://gw")
            for app in self.apps
        ]


def source() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


GRANT = {"grant_type": "client_credentials"}


async def admin_token(client: httpx.AsyncClient) -> dict[str, str]:
    response = await client.post("/v1/auth/login", json={"username": "admin", "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['access_token']}"}


async def new_system(client: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, str]:
    department = await client.post(
        "/v1/departments", json=DepartmentCreateFactory.build().model_dump(mode="json"), headers=admin
    )
    assert department.status_code == 201, department.text
    created = await client.post(
        f"/v1/departments/{department.json()['code']}/systems",
        json=SystemCreateFactory.build().model_dump(mode="json"),
        headers=admin,
    )
    assert created.status_code == 201, created.text
    return created.json()["client_id"], created.json()["client_secret"]


async def system_token(client: httpx.AsyncClient, client_id: str, secret: str) -> dict[str, str]:
    response = await client.post("/oauth2/token", data=GRANT, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return {"authorization": f"Bearer {response.json()['access_token']}"}

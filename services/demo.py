"""The demo seed (ARCHITECTURE.md, "Demo seed"), played through the public API as an
administrator would: 市公安局 submits 居民户籍信息 and the platform's reviewer publishes it; 市民政局's 低保审核系统 applies for
姓名/出生日期/户籍地址 for 最低生活保障审批; 公安局's approver approves, masking the name. 公安局's data
administrator registers its 户籍前置机 (a provider system) with the answer-signing keys of its
connector, without which the exchange verifies none of its answers.

Used by ``make run`` (embedded), the e2e tests and the benchmark. Credentials it creates are kept
in ``var/demo-credentials.json`` so that a restart prints the same ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from services.connector.service import synthetic_residents

POLICE = {"code": "111101000000198608", "name": "市公安局", "region_code": "110101", "level": "city"}
CIVIL_AFFAIRS = {"code": "11110100000013020B", "name": "市民政局", "region_code": "110101", "level": "city"}
PURPOSE = "ZDSHBZ-SP"  # 事项: 最低生活保障审批
GRANTED_ITEMS = ["姓名", "出生日期", "户籍地址"]
DEMO_PASSWORD = "Tongban-demo-2026"

HOUSEHOLD_RESOURCE: dict[str, Any] = {
    "name": "居民户籍信息",
    "summary": "常住人口户籍登记信息：姓名、性别、出生日期、户籍地址、公民身份号码。",
    "category": "101010",
    "classification": "basic",
    "format": "服务接口",
    "items": [
        {"name": "姓名", "data_type": "C", "length": 50},
        {"name": "性别", "data_type": "C", "length": 1},
        {"name": "出生日期", "data_type": "D", "length": 8},
        {"name": "户籍地址", "data_type": "C", "length": 200},
        {"name": "公民身份号码", "data_type": "C", "length": 18, "sensitive": True, "masking": "id_card"},
    ],
    "share": {"type": "conditional", "condition": "用于法定职责范围内的政务服务事项办理", "mode": "接口"},
    "open": {"public": False},
    "update_cycle": "实时",
    "subject_types": ["id_card"],
}


@dataclass
class DemoCredentials:
    gateway: str
    admin_password: str
    client_id: str
    client_secret: str
    resource: str
    purpose: str
    subject: str
    people: dict[str, str]  # username -> role
    provider_client_id: str = ""  # 市公安局's provider system (its connector's answer-signing keys)


def demo_subject() -> str:
    """The first synthetic resident of the demo connector: a valid 居民身份证号码."""
    return synthetic_residents(1)[0].id_number


async def _token(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/v1/auth/login", json={"username": username, "password": password})
    response.raise_for_status()
    return {"authorization": f"Bearer {response.json()['access_token']}"}


def _claims(headers: dict[str, str]) -> dict[str, Any]:
    """The (already trusted) token's claims, read without verifying: only to learn our own dept."""
    payload = headers["authorization"].split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def _ok(response: httpx.Response, *allowed: int) -> dict[str, Any]:
    if response.status_code not in (200, 201, *allowed):
        raise RuntimeError(
            f"demo seed: {response.request.method} {response.request.url} → {response.status_code} {response.text}"
        )
    return dict(response.json())


async def register_answer_keys(creds: DemoCredentials, connector: str) -> DemoCredentials:
    """Register the keys the demo connector (at ``connector``) signs answers with for 市公安局's
    provider system, made on first use: as the department's data administrator would, with the
    JWKS the connector publishes. Run at every start: a key the connector made since is added."""
    async with httpx.AsyncClient(timeout=30.0) as plain:
        jwks = await _ok(await plain.get(f"{connector.rstrip('/')}/.well-known/jwks.json"))
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        police = await _token(client, "gaj_admin", DEMO_PASSWORD)
        if not creds.provider_client_id:
            system = await _ok(
                await client.post(
                    f"/v1/departments/{POLICE['code']}/systems",
                    json={"name": "户籍前置机", "roles": ["provider"]},
                    headers=police,
                )
            )
            creds = replace(creds, provider_client_id=system["client_id"])
        await _ok(
            await client.put(f"/v1/systems/{creds.provider_client_id}/answer-keys", json={"jwks": jwks}, headers=police)
        )
    return creds


async def seed(gateway: str, admin_password: str, connector: str) -> DemoCredentials:
    async with httpx.AsyncClient(base_url=gateway, timeout=30.0) as client:
        admin = await _token(client, "admin", admin_password)
        for dept in (POLICE, CIVIL_AFFAIRS):
            await _ok(await client.post("/v1/departments", json=dept, headers=admin), 409)
        people = {
            "gaj_admin": ("data_admin", POLICE["code"]),
            "gaj_approver": ("approver", POLICE["code"]),
            "mzj_admin": ("data_admin", CIVIL_AFFAIRS["code"]),
            "auditor": ("auditor", None),
            "reviewer": ("platform_admin", None),  # 目录审核: publishes the catalogue entries submitted to it
        }
        for username, (role, dept_code) in people.items():
            body: dict[str, Any] = {"username": username, "password": DEMO_PASSWORD, "roles": [role]}
            body["department"] = dept_code or _claims(admin)["dept"]  # auditor, reviewer: with the platform operator
            await _ok(await client.post("/v1/users", json=body, headers=admin), 409)
        system = await _ok(
            await client.post(
                f"/v1/departments/{CIVIL_AFFAIRS['code']}/systems",
                json={"name": "低保审核系统", "roles": ["consumer"]},
                headers=admin,
            )
        )
        police = await _token(client, "gaj_admin", DEMO_PASSWORD)
        resource = await _ok(await client.post("/v1/registry/resources", json=HOUSEHOLD_RESOURCE, headers=police))
        await _ok(await client.post(f"/v1/registry/resources/{resource['code']}/submit", headers=police))
        reviewer = await _token(client, "reviewer", DEMO_PASSWORD)
        await _ok(await client.post(f"/v1/registry/resources/{resource['code']}/publish", headers=reviewer))
        consumer = await client.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(system["client_id"], system["client_secret"]),
        )
        consumer_auth = {"authorization": f"Bearer {consumer.json()['access_token']}"}
        application = await _ok(
            await client.post(
                "/v1/registry/applications",
                json={
                    "resource": resource["code"],
                    "client_id": system["client_id"],
                    "items": GRANTED_ITEMS,
                    "purpose": {"service_item": PURPOSE, "basis": "《社会救助暂行办法》第十一条"},
                    "valid_days": 365,
                    "daily_quota": 1_000_000,
                },
                headers=consumer_auth,
            )
        )
        approver = await _token(client, "gaj_approver", DEMO_PASSWORD)
        await _ok(
            await client.post(
                f"/v1/registry/applications/{application['id']}/approve",
                json={"masking": {"姓名": "name"}},
                headers=approver,
            )
        )
        creds = DemoCredentials(
            gateway=gateway,
            admin_password=admin_password,
            client_id=system["client_id"],
            client_secret=system["client_secret"],
            resource=resource["code"],
            purpose=PURPOSE,
            subject=demo_subject(),
            people={u: r for u, (r, _) in people.items()},
        )
    return await register_answer_keys(creds, connector)


async def wait_until_queryable(creds: DemoCredentials, timeout_s: float = 30.0) -> None:
    """The grant reaches the exchange as an event; wait until a demo query succeeds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client:
        token = await client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret)
        )
        headers = {"authorization": f"Bearer {token.json()['access_token']}"}
        body = {
            "resource": creds.resource,
            "purpose": creds.purpose,
            "subject": {"type": "id_card", "value": creds.subject},
        }
        while True:
            response = await client.post("/v1/exchange/queries", json=body, headers=headers)
            if response.status_code == 200:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"demo grant did not reach the exchange: {response.status_code} {response.text}")
            await asyncio.sleep(0.3)


def save(creds: DemoCredentials, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(creds), ensure_ascii=False, indent=2))
    os.chmod(path, 0o600)


def load(path: Path) -> DemoCredentials | None:
    if not path.exists():
        return None
    return DemoCredentials(**json.loads(path.read_text()))

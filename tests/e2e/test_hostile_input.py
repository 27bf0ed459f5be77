"""Hostile input at the edge: traversal through the gateway, NUL and broken text in paths, query
strings and bodies, over-long request ids, token responses that must not be cached, and one
trace id across the services' logs."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from services.demo import DEMO_PASSWORD, DemoCredentials
from tests.e2e.client import person_token, query_body, system_token, wait_for_audit
from tests.e2e.test_denials import assert_problem, counts
from tests.stack import DistributedStack

Stack = tuple[DistributedStack, DemoCredentials]


@pytest.fixture
async def client(distributed: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=distributed[1].gateway, timeout=30.0) as c:
        yield c


@pytest.mark.parametrize(
    "target",
    [
        b"/v1/exchange/%2e%2e/%2e%2e/openapi.json",
        b"/v1/exchange/%2E%2E/%2E%2e/openapi.json",
        b"/v1/exchange/.%2e/%2e./openapi.json",
        b"/v1/exchange/../../openapi.json",
        b"/v1/exchange/./../../openapi.json",
        b"/v1/registry/%2e%2e%2f%2e%2e%2fopenapi.json",
        b"/v1/audit/..%5c..%5copenapi.json",
    ],
)
async def test_traversal_through_the_gateway_is_refused(
    distributed: Stack, client: httpx.AsyncClient, target: bytes
) -> None:
    headers = await system_token(client, distributed[1])
    # The request target is sent as written: httpx would otherwise remove the dot segments itself.
    response = await client.get("/v1/exchange/x", headers=headers, extensions={"target": target})
    assert response.status_code in (400, 404), response.text
    assert "openapi" not in response.text
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_token_answers_are_never_cached(distributed: Stack, client: httpx.AsyncClient) -> None:
    creds = distributed[1]
    answers = [
        await client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(creds.client_id, creds.client_secret)
        ),
        await client.post("/oauth2/token", data={"grant_type": "client_credentials"}, auth=(creds.client_id, "wrong")),
        await client.post(
            "/oauth2/token", data={"grant_type": "password"}, auth=(creds.client_id, creds.client_secret)
        ),
        await client.post("/v1/auth/login", json={"username": "auditor", "password": DEMO_PASSWORD}),
        await client.post("/v1/auth/login", json={"username": "auditor", "password": "x" * 8}),
        await client.post("/v1/auth/login", json={"username": "auditor"}),
    ]
    assert [a.status_code for a in answers] == [200, 401, 400, 200, 401, 422]
    for answer in answers:
        assert answer.headers.get_list("cache-control") == ["no-store"], answer.request.url
        assert answer.headers["pragma"] == "no-cache"
    jwks = await client.get("/.well-known/jwks.json")
    assert "no-store" not in jwks.headers.get("cache-control", "")


async def test_every_service_sends_security_headers(distributed: Stack, client: httpx.AsyncClient) -> None:
    stack, creds = distributed
    headers = await system_token(client, creds)
    answers = [
        await client.get("/v1/registry/resources", headers=headers),  # proxied: registry's answer
        await client.get("/v1/exchange/queries/00000000-0000-0000-0000-000000000000", headers=headers),
        await client.get("/nowhere"),
        *[await client.get(f"http://127.0.0.1:{port}/healthz") for port in stack.ports.values()],
    ]
    for answer in answers:
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], answer.request.url
        assert answer.headers.get_list("x-frame-options") == ["DENY"]
        assert answer.headers.get_list("referrer-policy") == ["no-referrer"]
        assert "strict-transport-security" not in answer.headers  # plain HTTP here


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1/registry/resources/%00"),
        ("GET", "/v1/registry/resources?q=%00"),
        ("GET", "/v1/registry/resources?q=%ed%a0%80"),  # a lone surrogate, UTF-8 form
        ("GET", "/v1/audit/events?request_id=%00"),
        ("POST", "/v1/exchange/queries?x=%00"),
        ("POST", "/v1/exchange/queries/%ff"),
        ("POST", "/v1/departments/%00/systems"),
    ],
)
async def test_nul_or_broken_text_in_path_or_query_is_422_and_writes_nothing(
    distributed: Stack, client: httpx.AsyncClient, db: asyncpg.Connection, method: str, target: str
) -> None:
    creds = distributed[1]
    headers = await system_token(client, creds)
    before = await counts(db)
    response = await client.request(method, target, json=query_body(creds), headers=headers)
    assert_problem(response, 422, "validation")
    assert await counts(db) == before


@pytest.mark.parametrize("escape", [b"\\u0000", b"\\ud800"], ids=["nul", "lone-surrogate"])
async def test_nul_or_lone_surrogate_in_a_body_is_422_and_writes_nothing(
    distributed: Stack, client: httpx.AsyncClient, db: asyncpg.Connection, escape: bytes
) -> None:
    creds = distributed[1]
    headers = {**await system_token(client, creds), "content-type": "application/json"}
    # Sent as raw JSON escapes: a client library would refuse to encode a lone surrogate itself.
    resource = json.dumps(creds.resource).encode()
    body = json.dumps(query_body(creds)).encode().replace(resource, resource[:-1] + escape + b'"')
    assert escape in body
    before = await counts(db)
    problem = assert_problem(
        await client.post("/v1/exchange/queries", content=body, headers=headers), 422, "validation"
    )
    assert "NUL" in problem["detail"] or "surrogate" in problem["detail"]
    login = b'{"username": "auditor' + escape + b'", "password": "' + DEMO_PASSWORD.encode() + b'"}'
    problem = assert_problem(
        await client.post("/v1/auth/login", content=login, headers={"content-type": "application/json"}),
        422,
        "validation",
    )
    assert "NUL" in problem["detail"] or "surrogate" in problem["detail"]
    assert await counts(db) == before


async def test_over_long_request_id_is_replaced_and_audited_as_replaced(
    distributed: Stack, client: httpx.AsyncClient
) -> None:
    creds = distributed[1]
    headers = await system_token(client, creds)
    sent = "r" * 200
    response = await client.post(
        "/v1/exchange/queries", json=query_body(creds), headers={**headers, "x-request-id": sent}
    )
    assert response.status_code == 200, response.text
    replaced = response.headers["x-request-id"]
    assert replaced != sent and 1 <= len(replaced) <= 64
    auditor = await person_token(client, "auditor")
    record = await wait_for_audit(client, auditor, response.json()["id"], "completed")
    assert record["request_id"] == replaced


def log_lines(stack: DistributedStack, service: str) -> list[dict[str, Any]]:
    lines = []
    for line in (stack.logs / f"{stack.prefix}{service}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(dict(json.loads(line)))
    return lines


def traced(line: dict[str, Any], trace_id: str) -> bool:
    return line.get("trace_id") == trace_id or trace_id in line.get("trace_ids", ())


async def test_one_trace_id_connects_the_services_logs(distributed: Stack, client: httpx.AsyncClient) -> None:
    stack, creds = distributed
    headers = await system_token(client, creds)
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    response = await client.post(
        "/v1/exchange/queries", json=query_body(creds), headers={**headers, "traceparent": traceparent}
    )
    assert response.status_code == 200, response.text
    auditor = await person_token(client, "auditor")
    await wait_for_audit(client, auditor, response.json()["id"], "completed")
    services = ("gateway", "exchange", "connector", "audit")
    deadline = time.monotonic() + 10
    while True:  # the audit consumer logs its batch right after the transaction commits
        found = {s: [line for line in log_lines(stack, s) if traced(line, trace_id)] for s in services}
        if all(found.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert all(found.values()), {s: len(lines) for s, lines in found.items()}
    # Each service logged in a span of its own within the one trace.
    spans = {s: {line.get("span_id") for line in lines} for s, lines in found.items()}
    assert all(spans.values())
    assert not spans["gateway"] & spans["exchange"]

"""A consuming system's journey through async mode and batch (issue 10 §5), over HTTP through the
gateway, every service its own process and real Kafka between them: register a callback URL, ask
asynchronously, receive the signed outcome at a real HTTPS server that refuses the first attempts
— across a restart of the exchange, the queue being PostgreSQL's — then ask about several
subjects in one batch, each its own audited query; a batch over the limit and a callback URL not
https are refused and audited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.connector.service import synthetic_residents
from services.demo import DemoCredentials
from tests.e2e.client import person_token, query_body, system_token, wait_for_audit
from tests.exchange.callback_server import Hook, hook_server, verify_detached
from tests.gateway.tls import Pki, make_pki
from tests.stack import DistributedStack

SUBJECTS = [r.id_number for r in synthetic_residents(3)]


def restart_exchange(stack: DistributedStack, extra: dict[str, str] | None) -> None:
    stack.stop("exchange")
    stack.spawn("exchange", "services.exchange", extra)


@pytest.fixture
async def trusting_exchange(
    distributed: tuple[DistributedStack, DemoCredentials], tmp_path: Path
) -> AsyncIterator[tuple[DistributedStack, Pki, dict[str, str]]]:
    """The stack's exchange restarted to trust a CA made here (as an operator adds a department's
    private CA) and to retry fast; restarted as it was afterwards."""
    stack, _ = distributed
    pki = make_pki(tmp_path)
    extra = {
        "TONGBAN_EXCHANGE_CALLBACK_CA_FILE": str(pki.ca.cert),
        "TONGBAN_EXCHANGE_CALLBACK_BACKOFF_S": "3",  # the restart below falls between attempts
        "TONGBAN_EXCHANGE_CALLBACK_POLL_S": "0.2",
        "TONGBAN_EXCHANGE_BATCH_MAX_SUBJECTS": "3",
    }
    restart_exchange(stack, extra)
    await stack.wait_ready("exchange")
    try:
        yield stack, pki, extra
    finally:
        restart_exchange(stack, None)
        await stack.wait_ready("exchange")


async def received(hook: Hook, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(hook.received) < count:
        assert time.monotonic() < deadline, f"{len(hook.received)} callback attempts, not {count}"
        await asyncio.sleep(0.1)


async def test_async_query_with_a_signed_callback_then_a_batch(
    distributed: tuple[DistributedStack, DemoCredentials],
    trusting_exchange: tuple[DistributedStack, Pki, dict[str, str]],
) -> None:
    _, creds = distributed
    stack, pki, extra = trusting_exchange
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as client, hook_server(pki, refuse=2) as hook:
        system = await system_token(client, creds)
        auditor = await person_token(client, "auditor")

        # A URL that is not https is refused when registering and when named in a query.
        plain = await client.put("/v1/exchange/callback-url", json={"url": "http://x.example.gov.cn/"}, headers=system)
        assert plain.status_code == 422 and plain.json()["type"].endswith("/callback-url-not-https"), plain.text
        registered = await client.put("/v1/exchange/callback-url", json={"url": hook.url}, headers=system)
        assert registered.status_code == 200 and registered.json()["url"] == hook.url, registered.text
        elsewhere = await client.post(
            "/v1/exchange/queries",
            json=query_body(creds, mode="async", callback_url="https://elsewhere.example.com/hook"),
            headers=system,
        )
        assert elsewhere.status_code == 422, elsewhere.text
        assert elsewhere.json()["type"].endswith("/callback-url-not-registered")

        # Async: 202 at once, the query's Location; the outcome comes to the hook.
        accepted = await client.post(
            "/v1/exchange/queries",
            json=query_body(creds, mode="async", callback_url=hook.url),
            headers={**system, "Idempotency-Key": "async-journey-1"},
        )
        assert accepted.status_code == 202, accepted.text
        query_id = accepted.json()["id"]
        assert accepted.headers["location"] == f"/v1/exchange/queries/{query_id}"
        replay = await client.post(
            "/v1/exchange/queries",
            json=query_body(creds, mode="async", callback_url=hook.url),
            headers={**system, "Idempotency-Key": "async-journey-1"},
        )
        assert replay.status_code == 202 and replay.json()["id"] == query_id  # same key: same query

        await received(hook, 1)  # refused (503): to be retried
        # The exchange restarts between attempts: the callback waits in PostgreSQL, not in memory.
        restart_exchange(stack, extra)
        await stack.wait_ready("exchange")
        await received(hook, 3)

        read = await client.get(accepted.headers["location"], headers=system)
        assert read.status_code == 200 and read.json()["status"] == "completed", read.text
        headers, body = hook.received[-1]
        keys = await client.get("/v1/exchange/callback-keys", headers=system)
        assert keys.status_code == 200, keys.text
        assert verify_detached(keys.json(), headers["tongban-signature"], body)["alg"] == "Ed25519"
        assert httpx.Response(200, content=body).json() == read.json()  # the very outcome GET gives
        assert [h["tongban-attempt"] for h, _ in hook.received] == ["1", "2", "3"]
        assert (await wait_for_audit(client, auditor, query_id, "completed"))["consumer_client_id"] == creds.client_id

        # Batch: each subject its own query and audit record, an outcome each.
        subjects = [{"type": "id_card", "value": s} for s in SUBJECTS]
        batch: dict[str, Any] = {"resource": creds.resource, "purpose": creds.purpose, "subjects": subjects}
        answered = await client.post("/v1/exchange/queries:batch", json=batch, headers=system)
        assert answered.status_code == 200, answered.text
        outcomes = answered.json()["outcomes"]
        assert [o["index"] for o in outcomes] == [0, 1, 2]
        assert all(o["status"] == 200 and o["answer"]["status"] == "completed" for o in outcomes), outcomes
        ids = {o["answer"]["id"] for o in outcomes}
        assert len(ids) == 3
        for each in ids:
            await wait_for_audit(client, auditor, each, "completed")

        too_many = await client.post(
            "/v1/exchange/queries:batch", json={**batch, "subjects": subjects + subjects[:1]}, headers=system
        )
        assert too_many.status_code == 422 and too_many.json()["type"].endswith("/batch-too-large"), too_many.text

"""The gateway in front of two exchange replicas (issue 9 §7): one is SIGKILLed under load, and a
client sees no 502 for an idempotent request (one cut off after B committed it is "in progress"
until it ends, then answered by its Idempotency-Key); the dead replica costs at most one failed attempt
per request that was on its way to it, and is then left alone for its cool-off.

Before, with one upstream per service, the gateway answered 502 for 17 s while the other replica
was healthy.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from services.demo import DemoCredentials
from tests.e2e.client import query_body, system_token
from tests.e2e.test_faults import RESIDENTS, TIMEOUT_MS
from tests.stack import DistributedStack, free_port

Stack = tuple[DistributedStack, DemoCredentials]
WORKERS = 6
COOLOFF_S = 120  # longer than the test: a failed attempt on the dead replica after the first ones would show
UPSTREAM_ERRORS = {"upstream-unavailable", "upstream-timeout"}


@pytest.fixture
async def two_replicas(distributed: Stack) -> AsyncIterator[str]:
    """Exchange replica B beside A, and the gateway restarted with both as the exchange's upstreams;
    B's base URL. The gateway is restored to its single upstream afterwards."""
    stack, _ = distributed
    stack.ports["exchange-b"] = free_port()
    b = f"http://127.0.0.1:{stack.ports['exchange-b']}"
    stack.spawn("exchange-b", "services.exchange", {"TONGBAN_EXCHANGE_PORT": str(stack.ports["exchange-b"])})
    await stack.wait_ready("exchange-b")
    stack.stop("gateway")
    a = f"http://127.0.0.1:{stack.ports['exchange']}"
    stack.spawn(
        "gateway",
        "services.gateway",
        {"TONGBAN_EXCHANGE_URL": f"{a},{b}", "TONGBAN_UPSTREAM_COOLOFF_S": str(COOLOFF_S)},
    )
    await stack.wait_ready("gateway")
    try:
        yield b
    finally:
        stack.stop("exchange-b")
        stack.ports.pop("exchange-b", None)
        stack.stop("gateway")
        stack.start_service("gateway")
        await stack.wait_ready("gateway")


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)\{(.*)\} ([0-9.e+-]+)", line)
        if match is None or match.group(1) != name:
            continue
        have = dict(re.findall(r'([a-z_]+)="([^"]*)"', match.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


async def test_a_killed_exchange_replica_costs_no_client_a_502_and_at_most_one_attempt_per_request(
    distributed: Stack, two_replicas: str
) -> None:
    stack, creds = distributed
    b = two_replicas
    results: list[tuple[str, int, str]] = []  # (method, status, problem code)
    async with httpx.AsyncClient(base_url=creds.gateway, timeout=30.0) as gateway:
        headers = await system_token(gateway, creds)
        first = await gateway.post(
            "/v1/exchange/queries",
            json=query_body(creds, subject={"type": "id_card", "value": RESIDENTS[780]}, timeout_ms=TIMEOUT_MS),
            headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert first.status_code == 200, first.text
        query_id = first.json()["id"]
        subjects = iter(RESIDENTS[781:800])
        ended: list[int] = []  # the last status of each POST, once it no longer says "in progress"
        running = True

        def record(method: str, response: httpx.Response) -> None:
            code = response.json().get("type", "").rsplit("/", 1)[-1] if response.status_code >= 400 else ""
            results.append((method, response.status_code, code))

        async def ask(subject: str) -> None:
            """A POST with an Idempotency-Key, which the gateway may retry on the other replica.
            Cut off on B after B committed it, it is still in progress on A (409): the client
            retries with the same key, as told, until the query has ended."""
            body = query_body(creds, subject={"type": "id_card", "value": subject}, timeout_ms=TIMEOUT_MS)
            key, give_up = str(uuid.uuid4()), time.monotonic() + 90
            while True:
                response = await gateway.post(
                    "/v1/exchange/queries", json=body, headers={**headers, "Idempotency-Key": key}
                )
                record("POST", response)
                if response.status_code != 409 or time.monotonic() > give_up:
                    ended.append(response.status_code)
                    return
                await asyncio.sleep(float(response.headers["retry-after"]))

        async def worker(n: int) -> None:
            while running:
                if n == 0 and (subject := next(subjects, None)) is not None:
                    await ask(subject)
                else:
                    record("GET", await gateway.get(f"/v1/exchange/queries/{query_id}", headers=headers))
                # At most 25 requests/s a worker: together below the system's rate limit (200/s),
                # which a fast gateway otherwise reaches within the test (429 is not its subject).
                await asyncio.sleep(0.04)

        workers = [asyncio.create_task(worker(n)) for n in range(WORKERS)]
        # Until both replicas have had their share (a moment; longer on a busy machine).
        replicas = (f"http://127.0.0.1:{stack.ports['exchange']}", b)
        deadline = time.monotonic() + 60
        while True:
            await asyncio.sleep(0.5)
            before = (await gateway.get("/metrics")).text
            ok = [metric(before, "tongban_gateway_upstream_attempts_total", replica=r, outcome="ok") for r in replicas]
            if all(n > 0 for n in ok) or time.monotonic() > deadline:
                break
        served_before_kill = len(results)
        stack.stop("exchange-b", kill=True)
        await asyncio.sleep(3.0)
        running = False
        await asyncio.gather(*workers)
        after = (await gateway.get("/metrics")).text

    # Both replicas had their share before the kill.
    for replica in replicas:
        assert metric(before, "tongban_gateway_upstream_attempts_total", replica=replica, outcome="ok") > 0
    assert len(results) > served_before_kill + 20, "requests kept flowing after the kill"

    # No client saw the dead replica.
    assert [r for r in results if r[2] in UPSTREAM_ERRORS] == []
    assert {status for method, status, _ in results if method == "GET"} == {200}
    assert {(status, code) for method, status, code in results if method == "POST" and status == 409} <= {
        (409, "idempotency-in-progress")
    }
    assert ended and set(ended) <= {200, 504}  # each POST ended, answered or timed out, none lost

    # The requests that found B dead went to A (failovers), each at most once: B failed at most
    # once per request in flight at the kill (WORKERS), and no request after it was sent there.
    failed_on_b = sum(
        metric(after, "tongban_gateway_upstream_attempts_total", replica=b, outcome=outcome)
        for outcome in ("connect_error", "broken", "timeout")
    )
    failovers = metric(after, "tongban_gateway_upstream_failovers_total", service="exchange")
    assert 1 <= failed_on_b <= WORKERS
    assert failovers == failed_on_b
    assert metric(after, "tongban_gateway_upstream_healthy_replicas", service="exchange") == 1
    print(f"exchange replica SIGKILL behind the gateway: {len(results)} requests, {failovers:.0f} failovers, 0 502s")

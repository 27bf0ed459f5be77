"""Rate limits (限流) at the gateway (issue 9 §6): token buckets in PostgreSQL, correct across
replicas. Two gateway apps run on one database (as two replicas would), each with its lifespan;
requests are spread over both. Each test comes from an address of its own (the per-source buckets).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.common.db import create_engine
from services.common.errors import Problem
from services.gateway.ratelimit import LEASE_SHARE, Bucket, Outcome, RateLimiter
from tests.factories import credit_code, system
from tests.gateway.support import (
    API_BURST,
    GRANT,
    POLICY,
    REMAINING,
    SOURCE_BURST,
    TOKEN_BURST,
    Replicas,
    admin_token,
    new_system,
    source,
    system_token,
)
from tests.stack import free_port


def assert_rate_limited(response: httpx.Response, policy: str) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["type"].endswith("/rate-limited")
    assert int(response.headers["retry-after"]) >= 1
    assert POLICY.match(response.headers["ratelimit-policy"]).group(1) == policy  # type: ignore[union-attr]
    remaining = REMAINING.match(response.headers["ratelimit"])
    assert remaining is not None and remaining.group(1) == policy and remaining.group(2) == "0"


async def spread(
    clients: Sequence[httpx.AsyncClient], n: int, send: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]
) -> list[httpx.Response]:
    """``n`` requests at once, alternately on each replica; ``send(client, i)`` makes one."""
    return list(await asyncio.gather(*(send(clients[i % len(clients)], i) for i in range(n))))


async def test_two_replicas_let_exactly_the_burst_through_from_one_source(replicas: Replicas) -> None:
    clients = replicas.clients(source())
    names = [f"nobody-{uuid.uuid4().hex[:8]}" for _ in range(4 * SOURCE_BURST)]

    async def login(client: httpx.AsyncClient, i: int) -> httpx.Response:
        return await client.post("/v1/auth/login", json={"username": names[i], "password": "Wrong-2026-x"})

    answers = await spread(clients, len(names), login)
    passed = [a for a in answers if a.status_code != 429]
    assert len(passed) == SOURCE_BURST  # not 2 × burst: both replicas spend the same bucket
    assert {a.status_code for a in passed} == {401}
    for answer in answers:
        if answer.status_code == 429:
            assert_rate_limited(answer, "login")
    # A refused attempt is not even counted as a failed sign-in: nothing was written for it.
    refused = [names[i] for i, a in enumerate(answers) if a.status_code == 429]
    conn = await asyncpg.connect(replicas.dsn)
    try:
        counted = await conn.fetchval("SELECT count(*) FROM gateway.sign_in_failures WHERE name = ANY($1)", refused)
    finally:
        await conn.close()
    assert counted == 0


async def test_brute_force_on_the_token_endpoint_gets_429_then_recovers(replicas: Replicas) -> None:
    a, b = replicas.clients(source())
    admin = await admin_token(a)
    client_id, secret = await new_system(a, admin)

    async def guess(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await client.post("/oauth2/token", data=GRANT, auth=(client_id, "wrong"))

    guesses = await spread((a, b), 2 * TOKEN_BURST, guess)
    assert sorted(g.status_code for g in guesses) == [401] * TOKEN_BURST + [429] * TOKEN_BURST
    for rejected in (g for g in guesses if g.status_code == 429):
        assert_rate_limited(rejected, "token")
    refused = await b.post("/oauth2/token", data=GRANT, auth=(client_id, secret))  # even the right secret
    assert_rate_limited(refused, "token")
    await asyncio.sleep(int(refused.headers["retry-after"]))
    recovered = await a.post("/oauth2/token", data=GRANT, auth=(client_id, secret))
    assert recovered.status_code == 200, recovered.text


async def test_a_system_gets_its_own_limit_from_a_platform_admin_shared_by_both_replicas(replicas: Replicas) -> None:
    clients = replicas.clients(source())
    admin = await admin_token(clients[0])
    client_id, secret = await new_system(clients[0], admin)
    system = await system_token(clients[1], client_id, secret)

    default = await clients[0].get(f"/v1/systems/{client_id}/rate-limit", headers=admin)
    assert default.json() == {"client_id": client_id, "rate_per_s": 0.001, "burst": API_BURST, "default": True}
    # A system cannot set its own limit (BFLA), and bad values change nothing.
    assert (
        await clients[0].put(
            f"/v1/systems/{client_id}/rate-limit", json={"rate_per_s": 1e6, "burst": 10**7}, headers=system
        )
    ).status_code == 403
    for bad in ({"rate_per_s": 0, "burst": 5}, {"rate_per_s": 1, "burst": 0}, {"rate_per_s": 1, "burst": 5, "x": 1}):
        answer = await clients[0].put(f"/v1/systems/{client_id}/rate-limit", json=bad, headers=admin)
        assert answer.status_code == 422, answer.text
    assert (await clients[1].get(f"/v1/systems/{client_id}/rate-limit", headers=admin)).json()["default"] is True
    unknown = await clients[0].put(
        "/v1/systems/sys-nobody/rate-limit", json={"rate_per_s": 1, "burst": 5}, headers=admin
    )
    assert unknown.status_code == 404

    own = await clients[0].put(
        f"/v1/systems/{client_id}/rate-limit", json={"rate_per_s": 0.001, "burst": 4}, headers=admin
    )
    assert own.status_code == 200 and own.json()["default"] is False, own.text

    async def call(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await client.get(f"/v1/exchange/queries/{uuid.uuid4()}", headers=system)

    answers = await spread(clients, 12, call)
    assert sorted(a.status_code for a in answers) == [429] * 8 + [502] * 4  # through the limit: no upstream
    for answer in answers:
        if answer.status_code == 429:
            assert_rate_limited(answer, "api")
            assert answer.headers["ratelimit-policy"] == '"api";q=4;w=4000'

    reset = await clients[1].delete(f"/v1/systems/{client_id}/rate-limit", headers=admin)
    assert reset.status_code == 204
    back = await clients[0].get(f"/v1/exchange/queries/{uuid.uuid4()}", headers=system)
    # The default policy applies at once; the bucket keeps its level (a new limit refills nothing).
    assert_rate_limited(back, "api")
    assert back.headers["ratelimit-policy"] == f'"api";q={API_BURST};w={int(API_BURST / 0.001)}'


async def test_leases_keep_two_replicas_within_the_stated_bound_of_one_shared_bucket(replicas: Replicas) -> None:
    # Proxied requests spend leases (several tokens taken in one statement) instead of asking
    # PostgreSQL each time. Two replicas of one caller, as fast as they can for a second: never more
    # through than the shared bucket allows over the window plus one lease's life, never fewer
    # than the burst minus what both replicas may hold unspent, and far fewer than two unshared
    # buckets would let through.
    rate, burst, lease_s = 200.0, 400, 0.25
    settings = replicas.settings.model_copy(
        update={"rate_limit_per_s": rate, "rate_limit_burst": burst, "rate_limit_lease_s": lease_s}
    )
    lease = min(settings.rate_limit_lease_max, burst // LEASE_SHARE, int(rate * lease_s))
    assert lease > 1  # otherwise this would test one token per statement
    engines = [create_engine(settings.database_url, pool_size=2) for _ in range(2)]
    limiters = [CountingLimiter(engine, settings, CollectorRegistry()) for engine in engines]
    caller = system(credit_code("110101"))
    through = 0
    refusals: list[Problem] = []

    async def hammer(limiter: CountingLimiter, until: float) -> None:
        nonlocal through
        while time.monotonic() < until:
            try:
                headers = await limiter.check_api(caller)
            except Problem as problem:
                refusals.append(problem)
                await asyncio.sleep(0)  # refused answers come from PostgreSQL: let the others run
            else:
                assert POLICY.match(headers["RateLimit-Policy"]) and REMAINING.match(headers["RateLimit"])
                through += 1
                await asyncio.sleep(0)

    try:
        started = time.monotonic()
        until = started + 1.0
        await asyncio.gather(*(hammer(limiters[i % 2], until) for i in range(8)))
        window = time.monotonic() - started
    finally:
        for engine in engines:
            await engine.dispose()
    assert refusals  # the load went past the limit
    assert {(p.status, p.code) for p in refusals} == {(429, "rate-limited")}
    assert min(int(p.headers["Retry-After"]) for p in refusals) >= 1
    assert through <= burst + rate * (window + lease_s)
    assert through >= burst - 2 * lease
    assert through < 2 * burst  # one bucket for both replicas
    # Far fewer statements than requests: most requests were served from a lease.
    assert sum(limiter.statements for limiter in limiters) < (through + len(refusals)) / 2


class CountingLimiter(RateLimiter):
    """A replica's limiter that counts its statements to PostgreSQL."""

    statements = 0

    async def take(self, buckets: Sequence[Bucket], lease_max: int = 1, lease_s: float = 0.0) -> list[Outcome]:
        self.statements += 1
        return await super().take(buckets, lease_max, lease_s)


async def test_full_buckets_are_pruned(replicas: Replicas) -> None:
    limiter: RateLimiter = replicas.apps[0].state.ratelimiter
    key = f"test:{uuid.uuid4()}"
    (outcome,) = await limiter.take([Bucket("api", key, rate_per_s=1000.0, burst=2)])
    assert outcome.allowed and outcome.tokens == 1
    await asyncio.sleep(0.05)  # full again after 2 ms
    assert await limiter.prune() >= 1
    conn = await asyncpg.connect(replicas.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM gateway.rate_buckets WHERE key = $1", key) == 0
    finally:
        await conn.close()


async def test_oversized_and_malformed_bodies_are_refused_before_counting_or_hashing(replicas: Replicas) -> None:
    client, _ = replicas.clients(source())
    name = f"nobody-{uuid.uuid4().hex[:8]}"
    huge = "x" * (replicas.settings.max_body_bytes + 1)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is counted as it arrives
        for _ in range(3):
            yield b'{"username": "' + name.encode() + b'", "password": "' + huge.encode()[:40000] + b'"}'

    answers = [
        await client.post("/v1/auth/login", json={"username": name, "password": huge}),
        await client.post("/v1/auth/login", content=chunks(), headers={"content-type": "application/json"}),
        await client.post("/oauth2/token", data={"grant_type": "client_credentials", "scope": huge}, auth=(name, "x")),
    ]
    assert [(a.status_code, a.json()["type"].rsplit("/", 1)[1]) for a in answers] == [(413, "body-too-large")] * 3
    malformed = [
        await client.post("/v1/auth/login", content=b'{"username": ', headers={"content-type": "application/json"}),
        await client.post("/v1/auth/login", json={"username": name, "password": "Wrong-2026-x", "admin": True}),
        await client.post("/v1/auth/login", json={"username": name}),
        await client.post("/oauth2/token", json={"grant_type": "client_credentials"}, auth=(name, "x")),
        await client.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, headers={"authorization": "Basic !!"}
        ),
    ]
    assert [a.status_code for a in malformed] == [422, 422, 422, 400, 401]
    conn = await asyncpg.connect(replicas.dsn)
    try:
        buckets = await conn.fetchval("SELECT count(*) FROM gateway.rate_buckets WHERE key LIKE $1", f"%{name}%")
        failures = await conn.fetchval("SELECT count(*) FROM gateway.sign_in_failures WHERE name = $1", name)
    finally:
        await conn.close()
    assert (buckets, failures) == (0, 0)


async def test_proxied_requests_pass_unlimited_while_the_database_is_out_of_reach(replicas: Replicas) -> None:
    engine = create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing", pool_size=1)
    try:
        registry = CollectorRegistry()
        limiter = RateLimiter(engine, replicas.settings, registry)
        caller = system(credit_code("110101"))
        assert await limiter.check_api(caller) == {}  # no RateLimit fields: nothing was counted
        assert registry.get_sample_value("tongban_gateway_ratelimit_unavailable_total") == 1
        with pytest.raises(OSError, match="Connect call failed"):
            await limiter.check_token("sys-x", "10.0.0.1")  # the token endpoint needs the database anyway
    finally:
        await engine.dispose()

"""Lockout (锁定) under concurrent sign-ins, through the gateway app on a real PostgreSQL: a burst
of requests with the RIGHT secret or password is no burst of failures, and wrong ones still lock.
One gateway app with its lifespan on a fresh database, a low threshold and limits far above the
bursts (the rate limits are tested in test_ratelimit.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from tests.gateway.support import GRANT, KEK, PASSWORD, admin_token, new_system
from tests.stack import asyncpg_dsn, create_database, drop_database, free_port, infra_env

THRESHOLD = 3
BURST = 4 * THRESHOLD  # concurrent requests, well past the threshold
GENEROUS = 10_000  # rate limits no burst here reaches


@pytest.fixture(scope="module")
async def gateway() -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    settings = GatewaySettings(
        database_url=url,
        bus="memory",
        bootstrap_admin_password=PASSWORD,
        key_encryption_key=KEK,
        registry_url=f"http://127.0.0.1:{free_port()}",
        exchange_url=f"http://127.0.0.1:{free_port()}",
        audit_url=f"http://127.0.0.1:{free_port()}",
        lockout_threshold=THRESHOLD,
        token_rate_limit_burst=GENEROUS,
        login_rate_limit_burst=GENEROUS,
        source_rate_limit_burst=GENEROUS,
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield client, asyncpg_dsn(url)[0]
    finally:
        await drop_database(url)


async def failures_of(dsn: str, name: str) -> tuple[int, bool] | None:
    """The failure count of ``name`` and whether it is locked now; None if nothing is counted."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT failures, coalesce(locked_until > now(), false) AS locked"
            " FROM gateway.sign_in_failures WHERE name = $1",
            name,
        )
    finally:
        await conn.close()
    return None if row is None else (row["failures"], row["locked"])


async def test_a_burst_of_right_secrets_does_not_lock_a_client(gateway: tuple[httpx.AsyncClient, str]) -> None:
    client, dsn = gateway
    client_id, secret = await new_system(client, await admin_token(client))

    answers = await asyncio.gather(
        *(client.post("/oauth2/token", data=GRANT, auth=(client_id, secret)) for _ in range(BURST))
    )
    assert [a.status_code for a in answers] == [200] * BURST, [a.text for a in answers if a.status_code != 200]
    assert await failures_of(dsn, client_id) is None
    # Nor do they count towards the next wrong ones: a lockout still takes THRESHOLD of those.
    wrong = [await client.post("/oauth2/token", data=GRANT, auth=(client_id, "x" * 43)) for _ in range(THRESHOLD)]
    assert [w.status_code for w in wrong] == [401] * (THRESHOLD - 1) + [429]
    assert wrong[-1].json()["type"].endswith("/oauth2-client-locked")
    assert await failures_of(dsn, client_id) == (0, True)


async def test_a_burst_of_right_passwords_does_not_lock_a_person(gateway: tuple[httpx.AsyncClient, str]) -> None:
    client, dsn = gateway
    login = {"username": "admin", "password": PASSWORD}

    answers = await asyncio.gather(*(client.post("/v1/auth/login", json=login) for _ in range(BURST)))
    assert [a.status_code for a in answers] == [200] * BURST, [a.text for a in answers if a.status_code != 200]
    assert await failures_of(dsn, "admin") is None


async def test_a_burst_of_wrong_secrets_mixed_with_right_ones_still_locks(
    gateway: tuple[httpx.AsyncClient, str],
) -> None:
    client, dsn = gateway
    client_id, secret = await new_system(client, await admin_token(client))

    wrong = await asyncio.gather(
        *(client.post("/oauth2/token", data=GRANT, auth=(client_id, "x" * 43)) for _ in range(BURST))
    )
    statuses = sorted(w.status_code for w in wrong)
    assert set(statuses) <= {401, 429} and 429 in statuses  # some were checked, and the name got locked
    assert (await failures_of(dsn, client_id) or (0, False))[1] is True
    locked = await client.post("/oauth2/token", data=GRANT, auth=(client_id, secret))
    assert locked.status_code == 429 and locked.json()["type"].endswith("/oauth2-client-locked")

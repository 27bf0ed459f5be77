"""Security suite §1, access tokens: each forgery is refused by a service verifying against the
gateway's JWKS — alg=none, HS256 keyed with the public key, expired, nbf in the future, wrong aud
or iss, unknown kid, tampered payload — and a disabled system's token is inactive at once for
introspection. Services fetch the JWKS from a real HTTP server: again on an unknown kid, but at
most every few seconds, and the keys a rotation dropped stop being trusted."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey
from sqlalchemy.ext.asyncio import AsyncSession

from services.common import security
from services.common.errors import Problem
from services.common.security import PrincipalType, TokenVerifier
from services.gateway import keys, service
from services.gateway.models import Department, Status, System
from tests.factories import SystemCreateFactory
from tests.gateway.support import SETTINGS, WRAP


@pytest.fixture
async def ring(session: AsyncSession) -> keys.KeyRing:
    return await keys.prepare_ring(session, WRAP)


@pytest.fixture
async def system(session: AsyncSession, admin: Any, department: Department) -> System:
    created, _ = await service.create_system(session, admin, department.code, SystemCreateFactory.build(), SETTINGS)
    return created


def service_verifier(ring: keys.KeyRing) -> TokenVerifier:
    """What a service holds after fetching the gateway's JWKS (public keys only)."""
    return TokenVerifier(SETTINGS.jwt_issuer, SETTINGS.jwt_audience, keys=KeySet.import_key_set(ring.jwks()))  # type: ignore[arg-type]


def good_claims(system: System) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        "sub": system.client_id,
        "client_id": system.client_id,
        "principal_type": "system",
        "dept": system.dept_code,
        "roles": ["consumer"],
        "scope": "consumer",
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
    }


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


async def refused(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(Problem) as raised:
        await verifier.verify(token)
    assert raised.value.status == 401 and raised.value.code == "unauthorized"


async def test_a_good_token_is_accepted(ring: keys.KeyRing, system: System) -> None:
    token = jwt.encode({"alg": "ES256", "kid": ring.current.kid}, good_claims(system), ring.current)
    assert (await service_verifier(ring).verify(token)).client_id == system.client_id


async def test_alg_none_is_refused(ring: keys.KeyRing, system: System) -> None:
    await refused(
        service_verifier(ring), f"{b64({'alg': 'none', 'kid': ring.current.kid})}.{b64(good_claims(system))}."
    )


async def test_hs256_keyed_with_the_public_key_is_refused(ring: keys.KeyRing, system: System) -> None:
    public = json.dumps(ring.current.as_dict(private=False)).encode()
    forged = jwt.encode(
        {"alg": "HS256", "kid": ring.current.kid}, good_claims(system), OctKey.import_key(public), algorithms=["HS256"]
    )
    await refused(service_verifier(ring), forged)


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(time.time()) - 3600},  # expired
        {"nbf": int(time.time()) + 3600},  # not valid yet
        {"aud": "another-audience"},
        {"iss": "https://evil.example"},
    ],
    ids=["expired", "nbf-future", "wrong-aud", "wrong-iss"],
)
async def test_a_token_with_a_wrong_claim_is_refused(
    ring: keys.KeyRing, system: System, changes: dict[str, Any]
) -> None:
    token = jwt.encode({"alg": "ES256", "kid": ring.current.kid}, {**good_claims(system), **changes}, ring.current)
    await refused(service_verifier(ring), token)


async def test_a_token_with_an_unknown_kid_is_refused(ring: keys.KeyRing, system: System) -> None:
    stranger = ECKey.generate_key("P-256", parameters={"kid": "unknown"}, private=True)
    await refused(service_verifier(ring), jwt.encode({"alg": "ES256", "kid": "unknown"}, good_claims(system), stranger))
    # The gateway's kid on another key: the signature does not verify.
    impostor = ECKey.generate_key("P-256", private=True)
    await refused(
        service_verifier(ring), jwt.encode({"alg": "ES256", "kid": ring.current.kid}, good_claims(system), impostor)
    )


async def test_a_tampered_payload_is_refused(ring: keys.KeyRing, system: System) -> None:
    header, _, signature = jwt.encode(
        {"alg": "ES256", "kid": ring.current.kid}, good_claims(system), ring.current
    ).split(".")
    widened = {**good_claims(system), "roles": ["consumer", "provider"], "dept": "11110100MB00000001"}
    await refused(service_verifier(ring), f"{header}.{b64(widened)}.{signature}")


async def test_a_disabled_systems_token_is_inactive_at_once(
    session: AsyncSession, ring: keys.KeyRing, admin: Any, system: System
) -> None:
    token, _, _ = service.issue_token(
        ring.current,
        SETTINGS,
        kind=PrincipalType.SYSTEM,
        sub=system.client_id,
        dept=system.dept_code,
        roles=["consumer"],
    )
    gateway = TokenVerifier(SETTINGS.jwt_issuer, SETTINGS.jwt_audience, keys=KeySet(list(ring.published)))
    assert (await service.introspect(session, gateway, token))["active"] is True
    await service.set_system_status(session, admin, system.client_id, Status.DISABLED)
    assert await service.introspect(session, gateway, token) == {"active": False}


# --------------------------------------------------------------------------- services' JWKS cache


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The gateway's JWKS as a service fetches it: a real HTTP server on 127.0.0.1."""
    served: dict[str, Any] = {"jwks": {"keys": []}, "hits": 0}

    async def handler(request: web.Request) -> web.Response:
        served["hits"] += 1
        return web.json_response(served["jwks"])

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/.well-known/jwks.json", served
    finally:
        await runner.cleanup()


async def test_a_service_refetches_the_jwks_for_an_unknown_kid_at_most_every_few_seconds(
    session: AsyncSession,
    ring: keys.KeyRing,
    system: System,
    jwks_server: tuple[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, served = jwks_server
    served["jwks"] = ring.jwks()
    verifier = TokenVerifier(SETTINGS.jwt_issuer, SETTINGS.jwt_audience, jwks_url=url)
    try:
        first = jwt.encode({"alg": "ES256", "kid": ring.current.kid}, good_claims(system), ring.current)
        await verifier.verify(first)
        assert served["hits"] == 1

        # Made-up kids: at most one fetch per interval, however many arrive.
        stranger = ECKey.generate_key("P-256", parameters={"kid": "made-up"}, private=True)
        for _ in range(5):
            await refused(verifier, jwt.encode({"alg": "ES256", "kid": "made-up"}, good_claims(system), stranger))
        assert served["hits"] == 1

        # After a rotation the new current key is the old next one: already known, no fetch.
        rotated = await keys.rotate(session, WRAP, SETTINGS.token_ttl_s)
        served["jwks"] = rotated.jwks()
        token = jwt.encode({"alg": "ES256", "kid": rotated.current.kid}, good_claims(system), rotated.current)
        assert (await verifier.verify(token)).client_id == system.client_id
        assert served["hits"] == 1

        # Once the interval has passed, an unknown kid fetches the JWKS again and is found there.
        added = ECKey.generate_key("P-256", parameters={"kid": "added"}, private=True)
        served["jwks"] = {"keys": [*rotated.jwks()["keys"], added.as_dict(private=False)]}  # type: ignore[list-item]
        monkeypatch.setattr(security, "JWKS_MIN_INTERVAL_S", 0.0)
        assert await verifier.verify(jwt.encode({"alg": "ES256", "kid": "added"}, good_claims(system), added))
        assert served["hits"] == 2

        # A key the gateway dropped stops being trusted once the cached JWKS is old enough to be fetched again.
        served["jwks"] = {"keys": [k for k in rotated.jwks()["keys"] if k["kid"] != ring.current.kid]}  # type: ignore[union-attr]
        monkeypatch.setattr(security, "JWKS_MAX_AGE_S", 0.0)
        dropped = jwt.encode(
            {"alg": "ES256", "kid": ring.current.kid}, {**good_claims(system), "jti": "j2"}, ring.current
        )
        await refused(verifier, dropped)
        assert served["hits"] == 4  # due by age, then the unknown kid once more (both limits are 0 here)
    finally:
        await verifier.close()

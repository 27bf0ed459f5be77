"""private_key_jwt (RFC 7523): a system registers its public keys (a JWKS, or a jwks_uri) and
authenticates with a signed assertion — iss = sub = client id, aud = the token endpoint, a short
exp, a jti accepted once. Every forgery and misuse is refused, and a refused registration writes
nothing. Real PostgreSQL, rolled back per test; a jwks_uri is served by a real local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common.errors import Problem
from services.common.security import Principal, Role
from services.gateway import assertions, service
from services.gateway.assertions import ClientKeys
from services.gateway.config import GatewaySettings
from services.gateway.models import ClientAssertion, ClientSecret, Department, Status, System
from services.gateway.schemas import ClientKeysBody, SystemCreate
from tests.factories import credit_code, person
from tests.gateway.support import SETTINGS

TOKEN_ENDPOINT = SETTINGS.token_endpoint


def client_key(kid: str = "k1") -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def public_jwks(*keys: ECKey | OKPKey | RSAKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def b64_int(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def claims_for(client_id: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_ENDPOINT,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_hex(16),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign(key: ECKey, claims: dict[str, Any], alg: str = "ES256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


@pytest.fixture
def data_admin(department: Department) -> Principal:
    return person(department.code, Role.DATA_ADMIN)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
        yield client


@pytest.fixture
def client_keys(http: httpx.AsyncClient) -> ClientKeys:
    return ClientKeys(http, SETTINGS)


@pytest.fixture
def key() -> ECKey:
    return client_key()


async def register(
    session: AsyncSession, admin: Principal, department: Department, settings: GatewaySettings = SETTINGS, **keys: Any
) -> System:
    body = SystemCreate(name="公积金业务系统", roles=["consumer"], auth_method="private_key_jwt", **keys)
    system, secret = await service.create_system(session, admin, department.code, body, settings)
    assert secret is None  # no secret exists for a private_key_jwt system
    return system


@pytest.fixture
async def system(session: AsyncSession, data_admin: Principal, department: Department, key: ECKey) -> System:
    return await register(session, data_admin, department, jwks=public_jwks(key))


async def authenticate(session: AsyncSession, client_keys: ClientKeys, assertion: str) -> System:
    return await service.authenticate_assertion(session, client_keys, SETTINGS, assertion)


async def refused(session: AsyncSession, client_keys: ClientKeys, assertion: str) -> Problem:
    """The problem an assertion is refused with; nothing is recorded for it."""
    before = await spent(session)
    with pytest.raises(Problem) as raised:
        async with session.begin_nested():  # as the request's unit of work: rolled back with the refusal
            await authenticate(session, client_keys, assertion)
    assert await spent(session) == before
    return raised.value


async def spent(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ClientAssertion)) or 0)


def assert_invalid_client(problem: Problem) -> None:
    assert problem.status == 401
    assert problem.code == "oauth2-invalid-client"


# --------------------------------------------------------------------------- registration


async def test_a_system_registered_with_a_jwks_has_no_secret_and_signs_in_with_an_assertion(
    session: AsyncSession, client_keys: ClientKeys, system: System, key: ECKey
) -> None:
    assert system.auth_method == "private_key_jwt" and system.jwks == public_jwks(key)
    secrets_kept = await session.scalar(
        select(func.count()).select_from(ClientSecret).where(ClientSecret.client_id == system.client_id)
    )
    assert secrets_kept == 0

    assertion = sign(key, claims_for(system.client_id))
    assert (await authenticate(session, client_keys, assertion)).client_id == system.client_id
    jti = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "==="))["jti"]
    row = await session.get(ClientAssertion, (system.client_id, jti))
    assert row is not None and row.expires_at > datetime.now(UTC)


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ({"jwks": {"keys": []}}, "1 to 10"),
        ({"jwks": {"nokeys": 1}}, '{"keys"'),
        ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "a"}]}}, "kty"),
        ({"jwks": "private"}, None),  # not even an object
        ({}, "exactly one"),
        ({"jwks": {"keys": [{"kty": "EC"}]}}, "needs a kid"),
        ({"jwks": public_jwks(client_key()), "jwks_uri": "https://keys.example/jwks.json"}, "exactly one"),
    ],
)
def test_a_registration_without_usable_public_keys_is_refused(keys: dict[str, Any], reason: str | None) -> None:
    with pytest.raises(ValidationError) as raised:
        SystemCreate(name="公积金业务系统", roles=["consumer"], auth_method="private_key_jwt", **keys)
    if reason is not None:
        assert reason in str(raised.value)


def test_private_key_material_is_never_registered() -> None:
    private = client_key().as_dict(private=True)
    with pytest.raises(ValidationError, match="private key material"):
        ClientKeysBody(jwks={"keys": [private]})
    numbers = rsa.generate_private_key(65537, 1024).public_key().public_numbers()  # noqa: S505 (the point: refused)
    weak = {"kty": "RSA", "kid": "weak", "n": b64_int(numbers.n), "e": b64_int(numbers.e)}
    with pytest.raises(ValidationError, match="2048"):
        ClientKeysBody(jwks={"keys": [weak]})
    twice = client_key("same")
    with pytest.raises(ValidationError, match="twice"):
        ClientKeysBody(jwks=public_jwks(twice, client_key("same")))
    with pytest.raises(ValidationError, match="private_key_jwt only"):
        SystemCreate(name="公积金业务系统", roles=["consumer"], jwks=public_jwks(twice))


# The operator's allow-list of jwks_uri hosts: one name, and every subdomain of another.
ALLOW_LISTED = SETTINGS.model_copy(update={"jwks_uri_hosts": "keys.example, .jwks.example"})


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("http://keys.example/jwks.json", "https URL"),
        ("ftp://keys.example/jwks", "https URL"),
        ("https://user:pw@keys.example/j", "credentials"),
        ("https:///x", "https URL"),
        # SSRF: hosts the operator did not list, and address literals inside the platform.
        ("https://intranet.example/jwks.json", "not on TONGBAN_GATEWAY_JWKS_URI_HOSTS"),
        ("https://keys.example.attacker.example/jwks.json", "not on TONGBAN_GATEWAY_JWKS_URI_HOSTS"),
        ("https://jwks.example/jwks.json", "not on TONGBAN_GATEWAY_JWKS_URI_HOSTS"),  # ".x" means subdomains
        ("https://169.254.169.254/latest/meta-data", "not on TONGBAN_GATEWAY_JWKS_URI_HOSTS"),
        ("https://127.0.0.1:8000/.well-known/jwks.json", "not on TONGBAN_GATEWAY_JWKS_URI_HOSTS"),
    ],
)
async def test_a_jwks_uri_that_is_not_https_on_an_allowed_host_is_refused_and_nothing_is_written(
    session: AsyncSession, data_admin: Principal, department: Department, uri: str, says: str
) -> None:
    before = await session.scalar(select(func.count()).select_from(System))
    with pytest.raises(Problem) as raised:
        await register(session, data_admin, department, ALLOW_LISTED, jwks_uri=uri)
    assert raised.value.status == 422 and raised.value.code == "invalid-jwks-uri"
    assert says in str(raised.value.detail)
    assert await session.scalar(select(func.count()).select_from(System)) == before


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "100.64.0.1", "192.168.0.10"])
async def test_a_private_address_is_refused_even_when_allow_listed(
    session: AsyncSession, data_admin: Principal, department: Department, address: str
) -> None:
    settings = SETTINGS.model_copy(update={"jwks_uri_hosts": address})
    with pytest.raises(Problem) as raised:
        await register(session, data_admin, department, settings, jwks_uri=f"https://{address}/jwks.json")
    assert raised.value.code == "invalid-jwks-uri"
    assert "private, loopback or reserved" in str(raised.value.detail)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("::1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", False),
        ("224.0.0.1", False),
        ("192.168.1.1", False),
    ],
)
def test_only_global_unicast_addresses_are_fetched_from(address: str, allowed: bool) -> None:
    parsed = assertions.address_of(address)
    assert parsed is not None
    assert assertions.address_allowed(parsed, SETTINGS) is allowed
    assert assertions.address_allowed(parsed, SETTINGS.model_copy(update={"jwks_uri_allow_private": True}))


@pytest.mark.parametrize("uri", ["https://keys.example/jwks.json", "https://a.b.jwks.example:8443/k"])
async def test_an_https_jwks_uri_on_an_allowed_host_is_registered(
    session: AsyncSession, data_admin: Principal, department: Department, uri: str
) -> None:
    system = await register(session, data_admin, department, ALLOW_LISTED, jwks_uri=uri)
    assert system.jwks_uri == uri and system.jwks is None


async def test_without_an_allow_list_no_jwks_uri_is_accepted(
    session: AsyncSession, data_admin: Principal, department: Department
) -> None:
    with pytest.raises(Problem) as raised:
        await register(session, data_admin, department, SETTINGS, jwks_uri="https://keys.example/jwks.json")
    assert raised.value.code == "invalid-jwks-uri"


def test_a_malformed_allow_list_stops_the_gateway_at_start() -> None:
    for bad in ("https://keys.example", "keys.example/jwks", "*.example", "user@keys.example"):
        with pytest.raises(ValidationError, match="not a host name"):
            GatewaySettings(jwks_uri_hosts=bad)


# --------------------------------------------------------------------------- attacks (security suite §1)


async def test_a_replayed_assertion_is_refused(
    session: AsyncSession, client_keys: ClientKeys, system: System, key: ECKey
) -> None:
    assertion = sign(key, claims_for(system.client_id))
    await authenticate(session, client_keys, assertion)
    problem = await refused(session, client_keys, assertion)
    assert_invalid_client(problem)
    assert "used before" in str(problem.detail)


# Claims relative to the time the test runs (not the time it was collected: a long run would
# turn "not yet valid" into valid).
WRONG_CLAIMS: dict[str, Callable[[int], dict[str, Any]]] = {
    "aud of another endpoint": lambda now: {"aud": "https://gateway.test/oauth2/introspect"},
    "aud of another server": lambda now: {"aud": "https://elsewhere.example/oauth2/token"},
    "no aud": lambda now: {"aud": None},
    "another iss": lambda now: {"iss": "sys-0000000000000000"},
    "no iss": lambda now: {"iss": None},
    "expired beyond the leeway": lambda now: {"exp": now - 120},
    "no exp": lambda now: {"exp": None},
    "not yet valid": lambda now: {"nbf": now + 600},
    "no jti": lambda now: {"jti": None},
    "empty jti": lambda now: {"jti": ""},
    "lives longer than the bound": lambda now: {"exp": now + 3 * 3600},
    "signed to live two hours": lambda now: {"iat": now - 7200, "exp": now + 60},
}


@pytest.mark.parametrize("wrong", list(WRONG_CLAIMS))
async def test_an_assertion_with_a_wrong_claim_is_refused(
    session: AsyncSession, client_keys: ClientKeys, system: System, key: ECKey, wrong: str
) -> None:
    claims = claims_for(system.client_id)
    claims.update(WRONG_CLAIMS[wrong](int(time.time())))
    claims = {k: v for k, v in claims.items() if v is not None}
    assert_invalid_client(await refused(session, client_keys, sign(key, claims)))


async def test_alg_none_is_refused(session: AsyncSession, client_keys: ClientKeys, system: System) -> None:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    unsigned = f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(claims_for(system.client_id))}."
    assert_invalid_client(await refused(session, client_keys, unsigned))


async def test_hs256_keyed_with_the_public_key_is_refused(
    session: AsyncSession, client_keys: ClientKeys, system: System, key: ECKey
) -> None:
    # The classic confusion: an HMAC whose secret is the registered public key, which anyone has.
    public = json.dumps(key.as_dict(private=False)).encode()
    forged = jwt.encode(
        {"alg": "HS256", "kid": key.kid}, claims_for(system.client_id), OctKey.import_key(public), algorithms=["HS256"]
    )
    assert_invalid_client(await refused(session, client_keys, forged))


async def test_a_key_that_is_not_registered_is_refused(
    session: AsyncSession, client_keys: ClientKeys, system: System, key: ECKey
) -> None:
    unknown_kid = client_key("k2")
    assert_invalid_client(await refused(session, client_keys, sign(unknown_kid, claims_for(system.client_id))))
    same_kid_other_key = client_key(key.kid)
    assert_invalid_client(await refused(session, client_keys, sign(same_kid_other_key, claims_for(system.client_id))))


async def test_a_tampered_payload_is_refused(
    session: AsyncSession, client_keys: ClientKeys, system: System, key: ECKey
) -> None:
    header, payload, signature = sign(key, claims_for(system.client_id)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "==="))
    claims["exp"] += 30
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_invalid_client(await refused(session, client_keys, f"{header}.{tampered}.{signature}"))


@pytest.mark.parametrize("garbage", ["", "a.b", "a.b.c", "x" * 9000, "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln"])
async def test_garbage_is_refused_as_an_invalid_client(
    session: AsyncSession, client_keys: ClientKeys, system: System, garbage: str
) -> None:
    assert_invalid_client(await refused(session, client_keys, garbage))


async def test_a_secret_system_cannot_use_an_assertion_nor_a_key_system_a_secret(
    session: AsyncSession,
    client_keys: ClientKeys,
    data_admin: Principal,
    department: Department,
    system: System,
    key: ECKey,
) -> None:
    basic, _ = await service.create_system(
        session, data_admin, department.code, SystemCreate(name="社保经办系统", roles=["consumer"]), SETTINGS
    )
    assert_invalid_client(await refused(session, client_keys, sign(key, claims_for(basic.client_id))))
    with pytest.raises(Problem) as raised:
        await service.rotate_secret(session, data_admin, system.client_id)
    assert raised.value.code == "wrong-auth-method"


async def test_a_disabled_system_gets_no_token(
    session: AsyncSession, client_keys: ClientKeys, data_admin: Principal, system: System, key: ECKey
) -> None:
    await service.set_system_status(session, data_admin, system.client_id, Status.DISABLED)
    problem = await refused(session, client_keys, sign(key, claims_for(system.client_id)))
    assert problem.status == 400 and problem.code == "oauth2-unauthorized-client"


# --------------------------------------------------------------------------- client key rotation


async def test_the_client_rotates_its_keys_old_and_new_then_new_alone(
    session: AsyncSession, client_keys: ClientKeys, data_admin: Principal, system: System, key: ECKey
) -> None:
    new = client_key("k2")
    both = ClientKeysBody(jwks=public_jwks(key, new))
    await service.set_client_keys(session, data_admin, system.client_id, both, SETTINGS)
    await authenticate(session, client_keys, sign(key, claims_for(system.client_id)))
    await authenticate(session, client_keys, sign(new, claims_for(system.client_id)))

    await service.set_client_keys(
        session, data_admin, system.client_id, ClientKeysBody(jwks=public_jwks(new)), SETTINGS
    )
    assert_invalid_client(await refused(session, client_keys, sign(key, claims_for(system.client_id))))
    await authenticate(session, client_keys, sign(new, claims_for(system.client_id)))


async def test_keys_cannot_be_set_on_a_secret_system_nor_by_another_department(
    session: AsyncSession, data_admin: Principal, department: Department, system: System, key: ECKey
) -> None:
    basic, _ = await service.create_system(
        session, data_admin, department.code, SystemCreate(name="社保经办系统", roles=["consumer"]), SETTINGS
    )
    body = ClientKeysBody(jwks=public_jwks(client_key("k9")))
    with pytest.raises(Problem) as raised:
        await service.set_client_keys(session, data_admin, basic.client_id, body, SETTINGS)
    assert raised.value.code == "wrong-auth-method"
    await session.refresh(basic)
    assert basic.jwks is None

    outsider = person(credit_code("310101"), Role.DATA_ADMIN)
    with pytest.raises(Problem) as raised:
        await service.set_client_keys(session, outsider, system.client_id, body, SETTINGS)
    assert raised.value.status == 404
    await session.refresh(system)
    assert system.jwks == public_jwks(key)


# --------------------------------------------------------------------------- jwks_uri


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A real HTTP server on 127.0.0.1 serving what ``served`` holds at /jwks.json."""
    served: dict[str, Any] = {"body": b"{}", "status": 200, "hits": 0, "headers": {}}

    async def handler(request: web.Request) -> web.Response:
        served["hits"] += 1
        return web.Response(
            body=served["body"], status=served["status"], content_type="application/json", headers=served["headers"]
        )

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/jwks.json", served
    finally:
        await runner.cleanup()


HTTP_ALLOWED = SETTINGS.model_copy(
    update={
        "jwks_uri_allow_http": True,
        "jwks_uri_max_bytes": 4096,
        "jwks_uri_hosts": "127.0.0.1,localhost",
        "jwks_uri_allow_private": True,
    }
)


async def test_keys_at_a_jwks_uri_are_fetched_cached_and_refetched_for_a_new_kid(
    session: AsyncSession,
    http: httpx.AsyncClient,
    data_admin: Principal,
    department: Department,
    key: ECKey,
    jwks_server: tuple[str, dict[str, Any]],
) -> None:
    uri, served = jwks_server
    served["body"] = json.dumps(public_jwks(key)).encode()
    system = await register(session, data_admin, department, HTTP_ALLOWED, jwks_uri=uri)
    keys = ClientKeys(http, HTTP_ALLOWED.model_copy(update={"jwks_uri_refetch_s": 0}))

    await service.authenticate_assertion(session, keys, HTTP_ALLOWED, sign(key, claims_for(system.client_id)))
    await service.authenticate_assertion(session, keys, HTTP_ALLOWED, sign(key, claims_for(system.client_id)))
    assert served["hits"] == 1  # cached

    new = client_key("k2")
    served["body"] = json.dumps(public_jwks(key, new)).encode()
    await service.authenticate_assertion(session, keys, HTTP_ALLOWED, sign(new, claims_for(system.client_id)))
    assert served["hits"] == 2  # an unknown kid fetched the document again


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"x" * 5000, 200, "exceeds"),
        (b"not json", 200, "not JSON"),
        (b'{"keys": []}', 200, "1 to 10"),
        (b"{}", 404, "answered 404"),
    ],
)
async def test_a_bad_jwks_uri_document_refuses_the_assertion(
    session: AsyncSession,
    http: httpx.AsyncClient,
    data_admin: Principal,
    department: Department,
    key: ECKey,
    jwks_server: tuple[str, dict[str, Any]],
    body: bytes,
    status: int,
    reason: str,
) -> None:
    uri, served = jwks_server
    served["body"], served["status"] = body, status
    system = await register(session, data_admin, department, HTTP_ALLOWED, jwks_uri=uri)
    with pytest.raises(Problem) as raised:
        await service.authenticate_assertion(
            session, ClientKeys(http, HTTP_ALLOWED), HTTP_ALLOWED, sign(key, claims_for(system.client_id))
        )
    assert_invalid_client(raised.value)
    assert reason in str(raised.value.detail)


async def test_an_unreachable_jwks_uri_refuses_within_the_timeout(
    session: AsyncSession, http: httpx.AsyncClient, data_admin: Principal, department: Department, key: ECKey
) -> None:
    settings = HTTP_ALLOWED.model_copy(update={"jwks_uri_timeout_s": 0.5})
    system = await register(session, data_admin, department, settings, jwks_uri="http://127.0.0.1:9/jwks.json")
    started = time.monotonic()
    with pytest.raises(Problem) as raised:
        await service.authenticate_assertion(
            session, ClientKeys(http, settings), settings, sign(key, claims_for(system.client_id))
        )
    assert_invalid_client(raised.value)
    assert time.monotonic() - started < 5


async def test_a_redirect_is_not_followed_even_to_good_keys(
    session: AsyncSession,
    http: httpx.AsyncClient,
    data_admin: Principal,
    department: Department,
    key: ECKey,
    jwks_server: tuple[str, dict[str, Any]],
) -> None:
    uri, served = jwks_server
    served["status"], served["headers"] = 302, {"location": uri.replace("127.0.0.1", "localhost")}
    served["body"] = json.dumps(public_jwks(key)).encode()
    system = await register(session, data_admin, department, HTTP_ALLOWED, jwks_uri=uri)
    with pytest.raises(Problem) as raised:
        await service.authenticate_assertion(
            session, ClientKeys(http, HTTP_ALLOWED), HTTP_ALLOWED, sign(key, claims_for(system.client_id))
        )
    assert_invalid_client(raised.value)
    assert "answered 302" in str(raised.value.detail) and served["hits"] == 1


async def test_an_allowed_name_that_resolves_to_a_private_address_is_not_fetched(
    session: AsyncSession,
    http: httpx.AsyncClient,
    data_admin: Principal,
    department: Department,
    key: ECKey,
    jwks_server: tuple[str, dict[str, Any]],
) -> None:
    # The name is on the list and is no address literal, so registration takes it; the fetch
    # resolves it (to 127.0.0.1) and refuses before connecting.
    uri, served = jwks_server
    served["body"] = json.dumps(public_jwks(key)).encode()
    strict = HTTP_ALLOWED.model_copy(update={"jwks_uri_allow_private": False})
    system = await register(session, data_admin, department, strict, jwks_uri=uri.replace("127.0.0.1", "localhost"))
    with pytest.raises(Problem) as raised:
        await service.authenticate_assertion(
            session, ClientKeys(http, strict), strict, sign(key, claims_for(system.client_id))
        )
    assert_invalid_client(raised.value)
    assert "resolves to a private, loopback or reserved address" in str(raised.value.detail)
    assert served["hits"] == 0


async def test_a_jwks_uri_that_drips_is_cut_at_the_timeout(
    session: AsyncSession, http: httpx.AsyncClient, data_admin: Principal, department: Department, key: ECKey
) -> None:
    # A server that sends a byte every 0.2 s never trips a per-read timeout: the bound is on the whole fetch.
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "application/json"})
        await response.prepare(request)
        for _ in range(100):
            await response.write(b" ")
            await asyncio.sleep(0.2)
        return response

    app = web.Application()
    app.router.add_get("/jwks.json", drip)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = HTTP_ALLOWED.model_copy(update={"jwks_uri_timeout_s": 1.0})
    try:
        system = await register(
            session, data_admin, department, settings, jwks_uri=f"http://127.0.0.1:{port}/jwks.json"
        )
        started = time.monotonic()
        with pytest.raises(Problem) as raised:
            await service.authenticate_assertion(
                session, ClientKeys(http, settings), settings, sign(key, claims_for(system.client_id))
            )
        assert time.monotonic() - started < 3
    finally:
        await runner.cleanup()
    assert_invalid_client(raised.value)
    assert "could not be fetched" in str(raised.value.detail)


# --------------------------------------------------------------------------- the jti store


async def test_expired_jtis_are_purged_and_live_ones_kept(session: AsyncSession) -> None:
    now = datetime.now(UTC)
    session.add_all(
        [
            ClientAssertion(client_id="sys-a", jti="old", expires_at=now - timedelta(seconds=1)),
            ClientAssertion(client_id="sys-a", jti="live", expires_at=now + timedelta(seconds=60)),
        ]
    )
    await session.flush()
    assert await assertions.purge_spent(session) >= 1
    left = set((await session.scalars(select(ClientAssertion.jti).where(ClientAssertion.client_id == "sys-a"))).all())
    assert left == {"live"}


async def test_the_same_jti_from_another_client_is_its_own(
    session: AsyncSession,
    client_keys: ClientKeys,
    data_admin: Principal,
    department: Department,
    system: System,
    key: ECKey,
) -> None:
    other_key = client_key()
    other = await register(session, data_admin, department, jwks=public_jwks(other_key))
    await authenticate(session, client_keys, sign(key, claims_for(system.client_id, jti="shared")))
    await authenticate(session, client_keys, sign(other_key, claims_for(other.client_id, jti="shared")))


# --------------------------------------------------------------------------- whatever a client sends

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
JWK_FIELDS = st.fixed_dictionaries(
    {"kty": st.sampled_from(["EC", "OKP", "RSA", "oct", "x"]), "kid": st.text(max_size=5)},
    optional={
        "crv": st.sampled_from(["P-256", "Ed25519", "P-384", "x"]),
        "x": st.text(max_size=50),
        "y": JSON,
        "n": JSON,
        "e": JSON,
    },
)


@settings(max_examples=200, deadline=None)
@given(jwks=JSON | st.fixed_dictionaries({"keys": st.lists(JWK_FIELDS | JSON, max_size=3)}))
def test_any_jwks_is_either_accepted_or_refused_with_a_reason(jwks: Any) -> None:
    problem = assertions.jwks_problem(jwks)
    assert problem is None or isinstance(problem, str)


@settings(max_examples=200, deadline=None)
@given(
    assertion=st.text(max_size=300)
    | st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.text(max_size=60), st.text(max_size=60), st.text(max_size=60))
)
def test_any_assertion_text_is_read_or_refused(assertion: str) -> None:
    try:
        client_id, _ = assertions.unverified_client_id(assertion)
    except assertions.AssertionRejected:
        return
    assert 0 < len(client_id) <= 64


async def test_two_replicas_spending_the_same_jti_at_once_accept_it_once(tier_engine: AsyncEngine) -> None:
    """Two gateway replicas, each in its own transaction on its own connection, get the same
    assertion at the same moment: the second insert waits for the first to commit, then finds the
    row — exactly one accepts it. (Committed for real: cleaned up at the end.)"""
    jti = secrets.token_hex(16)
    exp = time.time() + 60
    first_inserted = asyncio.Event()
    outcomes: list[str] = []

    async def replica(name: str, wait: asyncio.Event | None) -> None:
        async with tier_engine.connect() as connection, connection.begin():
            session = AsyncSession(bind=connection)
            if wait is not None:
                await wait.wait()
            try:
                await assertions.spend_jti(session, "sys-replicas", jti, exp)
            except assertions.AssertionRejected:
                outcomes.append(f"{name}: refused")
                return
            outcomes.append(f"{name}: accepted")
            if wait is None:
                first_inserted.set()
                await asyncio.sleep(0.3)  # the other replica's insert now waits on this row's lock

    try:
        await asyncio.gather(replica("a", None), replica("b", first_inserted))
    finally:
        async with tier_engine.begin() as connection:
            await connection.execute(delete(ClientAssertion).where(ClientAssertion.jti == jti))
    assert outcomes == ["a: accepted", "b: refused"]

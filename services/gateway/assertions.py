"""``private_key_jwt`` client authentication (RFC 7523 §2.2, 私钥 JWT 客户端认证).

A system registers its public keys (a JWKS, or a ``jwks_uri`` the gateway fetches) and proves who
it is with a short-lived JWT signed by one of its private keys: ``iss`` = ``sub`` = its client id,
``aud`` = the token endpoint, an ``exp`` at most ``client_assertion_max_lifetime_s`` away, and a
``jti`` that is accepted once — recorded in PostgreSQL until the assertion expires, so that no
gateway replica accepts it twice. Signatures and claims are checked by joserfc; only asymmetric
algorithms are accepted (never ``none``, never an HMAC keyed with a public key).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, KeySetSerialization
from joserfc.jws import extract_compact
from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.security import LEEWAY_S
from services.gateway.config import GatewaySettings
from services.gateway.models import AuthMethod, ClientAssertion, System

log = logging.getLogger("tongban.gateway.assertions")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Asymmetric only: "none" and HS* are refused whatever the header says.
ASSERTION_ALGORITHMS = ["ES256", "EdDSA", "RS256", "PS256"]
KEY_TYPES = {"EC", "OKP", "RSA"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
MAX_JWKS_KEYS = 10
MIN_RSA_BITS = 2048
MAX_JTI_LENGTH = 255
MAX_ASSERTION_LENGTH = 8192
DEFAULT_PORTS = {"https": 443, "http": 80}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AssertionRejected(Exception):
    """Why a client assertion is refused: told to the client as ``invalid_client``."""


def jwks_problem(jwks: Any) -> str | None:
    """Why ``jwks`` cannot be a system's registered key set, or None: 1 to 10 public keys
    (EC, OKP or RSA of 2048 bits or more), each with a distinct ``kid``."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        return 'a JWKS is {"keys": [...]}'
    keys = jwks["keys"]
    if not 1 <= len(keys) <= MAX_JWKS_KEYS:
        return f"a JWKS holds 1 to {MAX_JWKS_KEYS} keys"
    kids: set[str] = set()
    for i, key in enumerate(keys):
        if not isinstance(key, dict):
            return f"key {i} is not a JSON object"
        if key.get("kty") not in KEY_TYPES:
            return f"key {i}: kty must be one of {sorted(KEY_TYPES)}"
        if PRIVATE_MEMBERS & set(key):
            return f"key {i} holds private key material: register the public key only"
        kid = key.get("kid")
        if not isinstance(kid, str) or not 0 < len(kid) <= 128:
            return f"key {i} needs a kid (1 to 128 characters)"
        if kid in kids:
            return f"kid {kid!r} appears twice"
        kids.add(kid)
        if key["kty"] == "RSA" and rsa_bits(key.get("n")) < MIN_RSA_BITS:
            return f"key {i}: RSA keys need at least {MIN_RSA_BITS} bits"
    try:
        KeySet.import_key_set(cast(KeySetSerialization, jwks))
    except Exception as err:  # anything a client can send must end as a refusal, never a 500
        return f"the keys do not import: {type(err).__name__}"
    return None


def answer_jwks_problem(jwks: Any) -> str | None:
    """Why ``jwks`` cannot be a provider system's answer-signing keys, or None: a valid key set
    (:func:`jwks_problem`) of Ed25519 keys only — SD-JWT answers are signed with EdDSA (Ed25519)."""
    problem = jwks_problem(jwks)
    if problem is not None:
        return problem
    for i, key in enumerate(jwks["keys"]):
        if key.get("kty") != "OKP" or key.get("crv") != "Ed25519" or not isinstance(key.get("x"), str):
            return f"key {i}: answers are signed with Ed25519 (kty OKP, crv Ed25519)"
    return None


def rsa_bits(modulus: Any) -> int:
    """The size of an RSA JWK's modulus ``n`` (base64url), 0 if it is not one."""
    if not isinstance(modulus, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()


def jwks_uri_problem(uri: str, settings: GatewaySettings) -> str | None:
    """Why ``uri`` cannot be a system's jwks_uri, or None: https (http only where configured for
    tests), no credentials, a host on the allow-list (``TONGBAN_GATEWAY_JWKS_URI_HOSTS``), and
    not a private or loopback address literal (where the name leads is checked at each fetch)."""
    try:
        url = httpx.URL(uri)
    except Exception as err:  # whatever a client sends: refused, never a 500
        return f"not a URL: {type(err).__name__}"
    allowed = {"https", "http"} if settings.jwks_uri_allow_http else {"https"}
    if url.scheme not in allowed or not url.host:
        return f"the jwks_uri must be an {' or '.join(sorted(allowed))} URL with a host"
    if url.userinfo:
        return "the jwks_uri may not carry credentials"
    if not host_allowed(url.host, settings.jwks_uri_host_list):
        return f"the gateway does not fetch keys from {url.host} (not on TONGBAN_GATEWAY_JWKS_URI_HOSTS)"
    literal = address_of(url.host)
    if literal is not None and not address_allowed(literal, settings):
        return "the jwks_uri names a private, loopback or reserved address"
    return None


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """``host`` is an entry of ``allowed``, or a subdomain of an entry written ``.example.gov.cn``."""
    name = host.lower().rstrip(".")
    return any(name == entry or (entry.startswith(".") and name.endswith(entry)) for entry in allowed)


def address_of(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def address_allowed(address: IPAddress, settings: GatewaySettings) -> bool:
    """A globally routable unicast address (not private, loopback, link-local — cloud metadata —,
    shared, reserved or multicast), unless private ones are allowed (tests)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return settings.jwks_uri_allow_private or (address.is_global and not address.is_multicast)


async def public_address(host: str, port: int, settings: GatewaySettings) -> str:
    """The address to fetch ``host`` from: every address it resolves to must be allowed (a name on
    the allow-list pointed at an internal address is refused), and the fetch goes to the one
    checked, not to whatever a second lookup would answer (DNS rebinding)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise AssertionRejected("the jwks_uri's host does not resolve") from err
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        parsed = address_of(address)
        if parsed is None or not address_allowed(parsed, settings):
            raise AssertionRejected("the jwks_uri's host resolves to a private, loopback or reserved address")
    if not addresses:
        raise AssertionRejected("the jwks_uri's host does not resolve")
    return addresses[0]


@dataclass
class ClientKeys:
    """The key sets of systems registered with a ``jwks_uri``, fetched and cached (owned by the
    lifespan, with its HTTP client). A fetch is bounded in time and size; redirects are not followed."""

    http: httpx.AsyncClient
    settings: GatewaySettings
    _cache: dict[str, tuple[KeySet, float]] = field(default_factory=dict)  # uri → (keys, fetched at)

    async def key_set(self, system: System, kid: str | None) -> KeySet:
        if system.jwks is not None:
            return KeySet.import_key_set(cast(KeySetSerialization, system.jwks))
        if system.jwks_uri is None:
            raise AssertionRejected("the system has no registered keys")
        cached = self._cache.get(system.jwks_uri)
        now = time.monotonic()
        if cached is not None:
            keys, fetched_at = cached
            fresh = now - fetched_at < self.settings.jwks_uri_cache_s
            known = kid is None or any(k.kid == kid for k in keys.keys)
            # An unknown kid refetches (the client rotated), but at most every jwks_uri_refetch_s.
            if fresh and (known or now - fetched_at < self.settings.jwks_uri_refetch_s):
                return keys
        keys = await self.fetch(system.jwks_uri)
        self._cache[system.jwks_uri] = (keys, now)
        return keys

    async def fetch(self, uri: str) -> KeySet:
        """The key set at ``uri``, checked again against the settings (the allow-list may have
        changed since registration), from an allowed address, within ``jwks_uri_timeout_s`` in
        all and ``jwks_uri_max_bytes``; a redirect is an answer like any other, not followed."""
        problem = jwks_uri_problem(uri, self.settings)
        if problem is not None:
            raise AssertionRejected(problem)
        url = httpx.URL(uri)
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.jwks_uri_timeout_s):
                address = await public_address(url.host, url.port or DEFAULT_PORTS[url.scheme], self.settings)
                pinned = url.copy_with(host=address)
                # The name for the Host header and for TLS (SNI and the certificate's check).
                extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
                headers = {"host": url.netloc.decode("ascii")}
                request = self.http.build_request("GET", pinned, headers=headers, extensions=extensions)
                response = await self.http.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        raise AssertionRejected(f"the jwks_uri answered {response.status_code}")
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.settings.jwks_uri_max_bytes:
                            raise AssertionRejected(
                                f"the jwks_uri's document exceeds {self.settings.jwks_uri_max_bytes} bytes"
                            )
                finally:
                    await response.aclose()
        except (httpx.HTTPError, TimeoutError) as err:
            log.warning("jwks_uri fetch failed", extra={"ctx_uri": uri, "ctx_error": repr(err)})
            raise AssertionRejected("the jwks_uri could not be fetched") from err
        try:
            document = json.loads(body)
        except ValueError as err:
            raise AssertionRejected("the jwks_uri's document is not JSON") from err
        problem = jwks_problem(document)
        if problem is not None:
            raise AssertionRejected(f"the jwks_uri's document: {problem}")
        return KeySet.import_key_set(cast(KeySetSerialization, document))


def unverified_client_id(assertion: str) -> tuple[str, str | None]:
    """The client id an assertion claims to be from (``sub``), and its ``kid`` — read before the
    signature is checked, only to find the keys to check it with."""
    if len(assertion) > MAX_ASSERTION_LENGTH:
        raise AssertionRejected("the assertion is too long")
    try:
        compact = extract_compact(assertion.encode())
        claims = json.loads(compact.payload)
        kid = compact.headers().get("kid")
    except Exception as err:  # whatever the bytes, a refusal
        raise AssertionRejected("the assertion is not a JWS") from err
    sub = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(sub, str) or not 0 < len(sub) <= 64:
        raise AssertionRejected("the assertion has no valid sub")
    return sub, kid if isinstance(kid, str) else None


def verified_claims(assertion: str, keys: KeySet, client_id: str, settings: GatewaySettings) -> dict[str, Any]:
    """The assertion's claims once its signature and every rule of RFC 7523 §3 hold."""
    try:
        token = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=LEEWAY_S,
            iss={"essential": True, "value": client_id},
            sub={"essential": True, "value": client_id},
            aud={"essential": True, "value": settings.token_endpoint},
            exp={"essential": True},
            jti={"essential": True},
        ).validate(token.claims)
    except JoseError as err:
        raise AssertionRejected(f"the assertion is not valid: {err.description or err.error}") from err
    except (ValueError, TypeError, KeyError) as err:  # a header or payload joserfc could not even read
        raise AssertionRejected("the assertion is malformed") from err
    claims = dict(token.claims)
    now = time.time()
    exp = claims["exp"]
    longest = settings.client_assertion_max_lifetime_s
    if exp - now > longest + LEEWAY_S or (isinstance(claims.get("iat"), int | float) and exp - claims["iat"] > longest):
        raise AssertionRejected(f"the assertion may live at most {longest} s")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH:
        raise AssertionRejected(f"jti must be a string of 1 to {MAX_JTI_LENGTH} characters")
    return claims


async def spend_jti(session: AsyncSession, client_id: str, jti: str, exp: float) -> None:
    """Record the assertion's ``jti`` as used; refused if it was already. Insert-or-nothing on the
    primary key: of two replicas inserting the same jti at once, the second waits for the first
    to commit and then finds the row."""
    expires_at = datetime.fromtimestamp(exp + LEEWAY_S, UTC)
    spent = (
        insert(ClientAssertion)
        .values(client_id=client_id, jti=jti, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=[ClientAssertion.client_id, ClientAssertion.jti])
        .returning(ClientAssertion.jti)
    )
    if (await session.execute(spent)).scalar_one_or_none() is None:
        raise AssertionRejected("this assertion (its jti) was used before")


async def authenticate(
    session: AsyncSession, client_keys: ClientKeys, settings: GatewaySettings, assertion: str
) -> System:
    """The system that signed ``assertion``. Raises :class:`AssertionRejected` otherwise."""
    client_id, kid = unverified_client_id(assertion)
    system = await session.get(System, client_id)
    if system is None or system.auth_method != AuthMethod.PRIVATE_KEY_JWT:
        raise AssertionRejected("unknown client, or one that does not use private_key_jwt")
    keys = await client_keys.key_set(system, kid)
    claims = verified_claims(assertion, keys, client_id, settings)
    await spend_jti(session, client_id, claims["jti"], float(claims["exp"]))
    return system


async def purge_spent(session: AsyncSession) -> int:
    """Forget the jtis of assertions that have expired (they would be refused as expired anyway)."""
    result = await session.execute(delete(ClientAssertion).where(ClientAssertion.expires_at < func.now()))
    return int(getattr(result, "rowcount", 0) or 0)

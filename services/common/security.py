"""Bearer-token verification, done by every service itself against the gateway's JWKS.

The gateway is the front door, not the only lock: each service checks signature, issuer,
audience and expiry, then its own object-level rules with the :class:`Principal`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact

from services.common.errors import CommonProblem, Problem

JWT_ALGORITHMS = ["ES256"]
JWKS_PATH = "/.well-known/jwks.json"
LEEWAY_S = 30  # clock skew tolerated on exp/nbf/iat
# The JWKS is fetched again when a token names an unknown kid (the gateway rotated its keys), at
# most every JWKS_MIN_INTERVAL_S so that tokens with made-up kids cannot hammer the gateway; and
# every JWKS_MAX_AGE_S anyway, so that a key the gateway dropped stops being trusted.
JWKS_MIN_INTERVAL_S = 5.0
JWKS_MAX_AGE_S = 300.0
VERIFIED_CACHE_SIZE = 50_000
# The access-token claim that says what the token identifies. It is the only way any service
# tells a system from a person: nothing infers it from other claims (a username can look like
# anything; a client id is only a name).
PRINCIPAL_TYPE_CLAIM = "principal_type"
# RFC 8705 §3.1: a certificate-bound token confirms its holder by the SHA-256 thumbprint of the
# client certificate, ``cnf: {"x5t#S256": …}``.
CNF_CLAIM = "cnf"
CNF_THUMBPRINT = "x5t#S256"
# The thumbprint of the client certificate the gateway saw (from the TLS-terminating proxy it
# trusts) and checked. Only the gateway sets it: it drops any copy a client sends
# (services/gateway/mtls.py), and the services are reachable only through the gateway.
CLIENT_CERT_THUMBPRINT_HEADER = "x-tongban-client-cert-s256"


class PrincipalType(StrEnum):
    SYSTEM = "system"  # a departmental system (业务系统), an OAuth2 client
    PERSON = "person"  # a person who logged in (数据管理员, 审批人, 审计员…)


class Role(StrEnum):
    """Roles a token may carry. Systems: consumer, provider, citizen_portal. People: the rest."""

    CONSUMER = "consumer"
    PROVIDER = "provider"
    PLATFORM_ADMIN = "platform_admin"
    DATA_ADMIN = "data_admin"
    APPROVER = "approver"
    AUDITOR = "auditor"
    CITIZEN_PORTAL = "citizen_portal"  # the citizen portal (市民门户): reads a person's own access report


SYSTEM_ROLES = frozenset({Role.CONSUMER, Role.PROVIDER, Role.CITIZEN_PORTAL})
PERSON_ROLES = frozenset({Role.PLATFORM_ADMIN, Role.DATA_ADMIN, Role.APPROVER, Role.AUDITOR})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a departmental system (client) or a person (user), as the token says."""

    type: PrincipalType
    sub: str
    client_id: str | None  # systems only
    dept: str  # 统一社会信用代码 of the caller's department
    roles: frozenset[str]
    scope: frozenset[str]
    jti: str
    # RFC 8705: the x5t#S256 of the certificate the token is bound to; None for an unbound token.
    cnf_thumbprint: str | None = None

    @property
    def is_system(self) -> bool:
        return self.type is PrincipalType.SYSTEM

    @property
    def is_person(self) -> bool:
        return self.type is PrincipalType.PERSON

    def has_role(self, *roles: Role) -> bool:
        return bool(self.roles.intersection(roles))


def unauthorized(detail: str) -> Problem:
    return CommonProblem.UNAUTHORIZED.problem(detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> Problem:
    return CommonProblem.FORBIDDEN.problem(detail)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise unauthorized("Send an access token: 'Authorization: Bearer <token>' (POST /oauth2/token).")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token.strip()


class TokenVerifier:
    """Verifies ES256 access tokens; keys come from a callable (the gateway's own key store) or
    from the gateway's JWKS over HTTP, cached and refreshed when an unknown ``kid`` appears."""

    def __init__(self, issuer: str, audience: str, jwks_url: str | None = None, keys: KeySet | None = None) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._keys = keys
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._http: httpx.AsyncClient | None = None
        # token -> (principal, exp): a token verified once need not be verified again until it
        # expires (an ES256 verification is the costliest step of an authenticated request).
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._claims = jwt.JWTClaimsRegistry(
            leeway=LEEWAY_S,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
            dept={"essential": True},
            principal_type={"essential": True, "values": [t.value for t in PrincipalType]},  # PRINCIPAL_TYPE_CLAIM
        )

    def use_keys(self, keys: KeySet) -> None:
        """Verify with ``keys`` from now on, given by the owner (the gateway's own ring): no fetching."""
        self._keys = keys
        self._jwks_url = None
        self._verified.clear()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def _refresh(self, force: bool) -> None:
        if self._jwks_url is None:
            return
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if self._keys is not None and (age < JWKS_MIN_INTERVAL_S or (not force and age < JWKS_MAX_AGE_S)):
                return
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=5.0)
            try:
                response = await self._http.get(self._jwks_url)
                response.raise_for_status()
                keys = KeySet.import_key_set(response.json())
            except (httpx.HTTPError, ValueError) as err:
                if self._keys is not None and not force:
                    # Only due for a refresh: keep the keys known, try again after the interval.
                    self._fetched_at = time.monotonic() - JWKS_MAX_AGE_S + JWKS_MIN_INTERVAL_S
                    return
                raise CommonProblem.JWKS_UNAVAILABLE.problem(f"JWKS fetch failed: {err}") from err
            if self._keys is None or {k.kid for k in self._keys.keys} != {k.kid for k in keys.keys}:
                self._verified.clear()  # a key may have been withdrawn
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached[1] + LEEWAY_S:
                return cached[0]
            del self._verified[token]
        await self._refresh(force=False)
        try:
            header = extract_compact(token.encode()).headers()
        except (JoseError, ValueError) as err:
            raise unauthorized("The access token is malformed.") from err
        kid = header.get("kid")
        if self._keys is None or not any(k.kid == kid for k in self._keys.keys):
            await self._refresh(force=True)
        if self._keys is None:
            raise unauthorized("No signing keys are known yet.")
        try:
            decoded = jwt.decode(token, self._keys, algorithms=JWT_ALGORITHMS)
            self._claims.validate(decoded.claims)
        except JoseError as err:
            raise unauthorized(f"The access token is not valid: {err.description or err.error}.") from err
        principal = principal_from_claims(decoded.claims)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()  # crude but bounded; a cold cache only costs verifications
        self._verified[token] = (principal, float(decoded.claims["exp"]))
        return principal


def require_certificate(principal: Principal, presented: str | None) -> None:
    """RFC 8705 §3: a certificate-bound token is good only with its certificate. ``presented``:
    the thumbprint of the certificate of this request (the gateway's header), or None."""
    if principal.cnf_thumbprint is None:
        return
    if presented is None:
        raise unauthorized("This access token is bound to a client certificate: present it over mutual TLS.")
    if not hmac.compare_digest(principal.cnf_thumbprint, presented):
        raise unauthorized("This access token is bound to another client certificate.")


def confirmation_of(claims: dict[str, Any]) -> str | None:
    """The ``x5t#S256`` of a ``cnf`` claim. A ``cnf`` this platform cannot check (another method,
    a malformed value) makes the token invalid: an unchecked binding would be no binding."""
    cnf = claims.get(CNF_CLAIM)
    if cnf is None:
        return None
    value = cnf.get(CNF_THUMBPRINT) if isinstance(cnf, dict) else None
    if not isinstance(value, str) or not value or set(cnf) != {CNF_THUMBPRINT}:
        raise unauthorized("The access token is not valid: its cnf claim cannot be checked here.")
    return value


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The principal of verified ``claims``; a system token must name its client."""
    kind = PrincipalType(claims[PRINCIPAL_TYPE_CLAIM])
    client_id = claims.get("client_id")
    if (kind is PrincipalType.SYSTEM) != isinstance(client_id, str):
        raise unauthorized("The access token is not valid: client_id goes with system tokens only.")
    cnf_thumbprint = confirmation_of(claims)
    return Principal(
        type=kind,
        sub=str(claims["sub"]),
        client_id=client_id,
        dept=str(claims["dept"]),
        roles=frozenset(claims.get("roles") or ()),
        scope=frozenset(str(claims.get("scope") or "").split()),
        jti=str(claims.get("jti", "")),
        cnf_thumbprint=cnf_thumbprint,
    )

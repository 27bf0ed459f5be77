"""Gateway routes: tokens, JWKS, identity administration, and the proxy to the other services."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import parse_qs, quote, unquote

import aiohttp
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.contracts.audit import AuditAction
from services.common.errors import CommonProblem, Problem, problem_response, problem_responses
from services.common.http import NoStoreRoute
from services.common.logs import context_headers
from services.common.runtime import CurrentPrincipal, UnitOfWorkDep
from services.common.security import (
    CLIENT_CERT_THUMBPRINT_HEADER,
    SYSTEM_ROLES,
    Principal,
    PrincipalType,
    bearer_token,
    require_certificate,
)
from services.gateway import assertions, audit, authorization, keys, mtls, ratelimit, service
from services.gateway.audit import IntrospectionTrail, SignInTrail, TokenTrail, Trail
from services.gateway.config import GatewaySettings
from services.gateway.models import AuthMethod, KeyState, RateLimit, SigningKey, Status, System
from services.gateway.problems import GatewayProblem
from services.gateway.ratelimit import RateLimiter
from services.gateway.schemas import (
    AnswerKeysBody,
    AnswerKeysPublic,
    ClientKeysBody,
    ClientKeysPublic,
    DepartmentCreate,
    DepartmentList,
    DepartmentPublic,
    Introspection,
    Login,
    RateLimitPublic,
    RateLimitSet,
    SecretCreated,
    SecretList,
    SecretPublic,
    SigningKeyList,
    SigningKeyPublic,
    StatusPublic,
    SystemCreate,
    SystemCreated,
    SystemList,
    SystemPublic,
    TokenResponse,
    UserAccount,
    UserCreate,
    UserList,
    UserPublic,
    UserRoles,
)
from services.gateway.service import OAuthError
from services.gateway.upstreams import UpstreamFailed, Upstreams, body_of, response_headers

# Every route is checked against the edge authorization table first (authorization.EDGE_RULES).
# Proxied paths never reach a route: PassThrough checks the path they forward instead (proxy()).
router = APIRouter(dependencies=[Depends(authorization.edge_authorization)])
# Routes that answer with tokens: no-store on every answer, errors included (RFC 6749 §5.1).
credentials = APIRouter(route_class=NoStoreRoute)

# Headers passed through to the services behind the gateway, in both directions.
# The certificate thumbprint is the gateway's own (mtls.ClientCertificates drops a client's copy).
FORWARD_REQUEST_HEADERS = frozenset(
    {
        "authorization",
        "content-type",
        "content-disposition",  # an upload's file name (RFC 6266), which the registry's import jobs record
        "idempotency-key",
        "x-request-id",
        "accept",
        "traceparent",
        CLIENT_CERT_THUMBPRINT_HEADER,
    }
)
# Answers up to this size are read whole and sent with a Content-Length; larger ones are streamed.
SMALL_ANSWER_BYTES = 64 * 1024
# RFC 3986 pchar (and "/") plus "%", so that existing escapes are kept as they are.
PATH_SAFE = "/%!$&'()*+,;=:@-._~"
QUERY_SAFE = PATH_SAFE + "?"
BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def settings_of(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.runtime.settings
    return settings


def lockout_of(request: Request, trail: Trail) -> service.Lockout:
    """The lockout of a sign-in, kept by the request's audit ``trail``: the trail counts the
    request's failure once its unit of work has ended, and audits the lockouts it causes."""
    trail.lockout = service.Lockout.of(request.app.state.runtime.sessions, settings_of(request), trail.locked)
    return trail.lockout


def changed(
    request: Request, uow: UnitOfWorkDep, principal: Principal, action: AuditAction, target: str, change: str
) -> None:
    """Audit an administrative change, in the route's unit of work."""
    audit.record_change(uow, settings_of(request), principal, action, target, change)


def ratelimiter_of(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.ratelimiter
    return limiter


def source_of(request: Request) -> str:
    """The address the request came from: the peer of this connection, or the address a trusted
    proxy (TONGBAN_GATEWAY_TRUSTED_PROXIES) forwarded; never a client's own header."""
    return mtls.client_address(request, settings_of(request).proxy_networks)


def certificate_of(request: Request) -> str | None:
    """The x5t#S256 of the client certificate of this request, as checked by mtls.ClientCertificates."""
    return request.headers.get(CLIENT_CERT_THUMBPRINT_HEADER)


def department_public(d: object) -> DepartmentPublic:
    return DepartmentPublic.model_validate(d, from_attributes=True)


async def authenticated_system(
    request: Request, trail: Trail, uow: UnitOfWorkDep, form: dict[str, str], authorization: str | None
) -> System:
    """The client of a token (or introspection) request: by its private_key_jwt assertion, or its
    Basic secret — one method only (RFC 6749 §2.3). ``trail``: the request's audit trail."""
    limiter, source = ratelimiter_of(request), source_of(request)
    if "client_assertion" not in form and "client_assertion_type" not in form:
        client_id, secret = service.parse_basic(authorization)
        trail.claims(client_id, AuthMethod.CLIENT_SECRET_BASIC)
        await limiter.check_token(client_id, source)  # counted before any hashing
        return await service.authenticate_client(uow.session, lockout_of(request, trail), client_id, secret)
    claimed = ""
    with contextlib.suppress(assertions.AssertionRejected):  # the claimed name, for the limit and the audit
        claimed = assertions.unverified_client_id(form.get("client_assertion", ""))[0]
    if claimed:
        trail.claims(claimed, AuthMethod.PRIVATE_KEY_JWT)
    await limiter.check_token(claimed, source)  # counted before any signature is checked
    if authorization:
        raise OAuthError(GatewayProblem.OAUTH2_INVALID_REQUEST, "Use one client authentication method, not two.")
    if form.get("client_assertion_type") != assertions.ASSERTION_TYPE or not form.get("client_assertion"):
        raise OAuthError(
            GatewayProblem.OAUTH2_INVALID_REQUEST,
            f"private_key_jwt needs client_assertion_type={assertions.ASSERTION_TYPE} and a client_assertion.",
        )
    system = await service.authenticate_assertion(
        uow.session, request.app.state.client_keys, settings_of(request), form["client_assertion"]
    )
    if form.get("client_id", system.client_id) != system.client_id:
        raise OAuthError(GatewayProblem.OAUTH2_INVALID_CLIENT, "client_id and the assertion's sub differ.")
    return system


async def read_form(request: Request) -> dict[str, str]:
    """An OAuth2 endpoint's form (RFC 6749 §3.2, RFC 7662 §2.1): urlencoded or refused."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise OAuthError(
            GatewayProblem.OAUTH2_INVALID_REQUEST, "Send the request as application/x-www-form-urlencoded."
        )
    return {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}


# private_key_jwt (RFC 7523 §2.2): the form fields of a client assertion.
CLIENT_ASSERTION_FIELDS = {
    "client_assertion_type": {"type": "string", "enum": [assertions.ASSERTION_TYPE]},
    "client_assertion": {
        "type": "string",
        "description": "private_key_jwt (RFC 7523): a JWT signed with a key of the system's JWKS",
    },
    "client_id": {"type": "string", "description": "optional with private_key_jwt; must match"},
}

# The form is read by hand (RFC 6749 names its fields; FastAPI's Form() would need python-multipart
# for one urlencoded body); declared here so that the OpenAPI document, and its clients, know it.
TOKEN_REQUEST = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["grant_type"],
                "properties": {
                    "grant_type": {"type": "string", "enum": ["client_credentials"]},
                    "scope": {"type": "string", "description": "space-separated roles; default: all of the system's"},
                    **CLIENT_ASSERTION_FIELDS,
                },
            }
        }
    },
}


@credentials.post(
    "/oauth2/token",
    response_model=TokenResponse,
    tags=["oauth2"],
    summary="Client credentials grant (client_secret_basic or private_key_jwt)",
    openapi_extra={"requestBody": TOKEN_REQUEST},
    responses=problem_responses(
        GatewayProblem.OAUTH2_INVALID_REQUEST,
        GatewayProblem.OAUTH2_INVALID_CLIENT,
        GatewayProblem.OAUTH2_UNSUPPORTED_GRANT_TYPE,
        GatewayProblem.OAUTH2_INVALID_SCOPE,
        GatewayProblem.OAUTH2_UNAUTHORIZED_CLIENT,
        GatewayProblem.OAUTH2_CLIENT_LOCKED,
        GatewayProblem.RATE_LIMITED,
    ),
)
async def token(
    request: Request, trail: TokenTrail, uow: UnitOfWorkDep, authorization: Annotated[str | None, Header()] = None
) -> TokenResponse:
    form = await read_form(request)
    if form.get("grant_type") != "client_credentials":
        raise OAuthError(
            GatewayProblem.OAUTH2_UNSUPPORTED_GRANT_TYPE, "Only grant_type=client_credentials is supported."
        )
    system = await authenticated_system(request, trail, uow, form, authorization)
    trail.ctx = trail.ctx.with_(consumer_dept=system.dept_code, consumer_client_id=system.client_id)
    wanted = set(form.get("scope", "").split())
    if wanted - set(system.roles):
        raise OAuthError(
            GatewayProblem.OAUTH2_INVALID_SCOPE, f"This system may only ask for: {' '.join(system.roles)}."
        )
    roles = sorted(wanted) if wanted else system.roles
    certificate = certificate_of(request) if system.certificate_bound else None
    if system.certificate_bound and certificate is None:
        raise OAuthError(
            GatewayProblem.OAUTH2_UNAUTHORIZED_CLIENT,
            "This system's tokens are certificate-bound (RFC 8705): ask over mutual TLS with its client certificate.",
        )
    access, ttl, scope = service.issue_token(
        request.app.state.key_ring.current,
        settings_of(request),
        kind=PrincipalType.SYSTEM,
        sub=system.client_id,
        dept=system.dept_code,
        roles=roles,
        certificate=certificate,
    )
    issued = trail.ctx.with_(fields=tuple(roles))
    uow.emit(audit.event(settings_of(request), AuditAction.TOKEN_ISSUED, issued, outcome=audit.ISSUED))
    return TokenResponse(access_token=access, expires_in=ttl, scope=scope)


INTROSPECTION_REQUEST = {
    "required": True,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "required": ["token"],
                "properties": {
                    "token": {"type": "string", "description": "the access token to check"},
                    "token_type_hint": {"type": "string", "enum": ["access_token"]},
                    **CLIENT_ASSERTION_FIELDS,
                },
            }
        }
    },
}


@credentials.post(
    "/oauth2/introspect",
    response_model=Introspection,
    response_model_exclude_none=True,
    tags=["oauth2"],
    summary="RFC 7662 token introspection (client_secret_basic or private_key_jwt): is this token still good?",
    openapi_extra={"requestBody": INTROSPECTION_REQUEST},
    responses=problem_responses(
        GatewayProblem.OAUTH2_INVALID_REQUEST,
        GatewayProblem.OAUTH2_INVALID_CLIENT,
        GatewayProblem.OAUTH2_UNAUTHORIZED_CLIENT,
        GatewayProblem.OAUTH2_CLIENT_LOCKED,
        GatewayProblem.RATE_LIMITED,
    ),
)
async def introspect(
    request: Request,
    trail: IntrospectionTrail,
    uow: UnitOfWorkDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Introspection:
    form = await read_form(request)
    # Only a registered, active system may ask (RFC 7662 §2.1), so tokens cannot be probed anonymously.
    await authenticated_system(request, trail, uow, form, authorization)
    token_value = form.get("token")
    if not token_value:
        raise OAuthError(GatewayProblem.OAUTH2_INVALID_REQUEST, "Send the token to introspect as token=….")
    answer = await service.introspect(uow.session, request.app.state.runtime.verifier, token_value)
    return Introspection.model_validate(answer)


@credentials.post(
    "/v1/auth/login",
    response_model=TokenResponse,
    tags=["identity"],
    summary="Log a person in",
    responses=problem_responses(
        GatewayProblem.INVALID_CREDENTIALS,
        GatewayProblem.ACCOUNT_DISABLED,
        GatewayProblem.ACCOUNT_LOCKED,
        GatewayProblem.RATE_LIMITED,
    ),
)
async def login(body: Login, request: Request, trail: SignInTrail, uow: UnitOfWorkDep) -> TokenResponse:
    trail.claims(body.username)
    await ratelimiter_of(request).check_login(body.username, source_of(request))
    user = await service.authenticate_user(uow.session, lockout_of(request, trail), body.username, body.password)
    access, ttl, scope = service.issue_token(
        request.app.state.key_ring.current,
        settings_of(request),
        kind=PrincipalType.PERSON,
        sub=user.username,
        dept=user.dept_code,
        roles=user.roles,
    )
    signed_in = trail.ctx.with_(consumer_dept=user.dept_code, fields=tuple(user.roles))
    uow.emit(audit.event(settings_of(request), AuditAction.SIGN_IN, signed_in, outcome=audit.SIGNED_IN))
    return TokenResponse(access_token=access, expires_in=ttl, scope=scope)


@router.get("/.well-known/jwks.json", tags=["oauth2"], summary="Token signing keys: next, current, previous")
async def jwks(request: Request) -> dict[str, object]:
    ring: keys.KeyRing = request.app.state.key_ring
    return ring.jwks()


@router.get("/.well-known/oauth-authorization-server", tags=["oauth2"], summary="RFC 8414 metadata")
async def metadata(request: Request) -> dict[str, object]:
    """What the token endpoint supports, and the algorithms a private_key_jwt assertion may use."""
    settings = settings_of(request)
    base = settings.public_url
    return {
        "issuer": settings.jwt_issuer,
        "token_endpoint": settings.token_endpoint,
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "introspection_endpoint": f"{base}/oauth2/introspect",
        "introspection_endpoint_auth_methods_supported": [m.value for m in AuthMethod],
        "introspection_endpoint_auth_signing_alg_values_supported": assertions.ASSERTION_ALGORITHMS,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": [m.value for m in AuthMethod],
        "token_endpoint_auth_signing_alg_values_supported": assertions.ASSERTION_ALGORITHMS,
        "scopes_supported": sorted(SYSTEM_ROLES),
        # RFC 8705 §3.3: systems registered so get tokens bound to their client certificate.
        "tls_client_certificate_bound_access_tokens": True,
        "response_types_supported": [],  # required by RFC 8414; no authorization endpoint, so none
    }


@router.post("/v1/departments", status_code=201, response_model=DepartmentPublic, tags=["identity"])
async def create_department(
    body: DepartmentCreate, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> DepartmentPublic:
    department = await service.create_department(uow.session, principal, body)
    changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, department.code, "department.create")
    return department_public(department)


@router.get("/v1/departments", response_model=DepartmentList, tags=["identity"])
async def list_departments(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=18)] = None,
) -> DepartmentList:
    rows, next_cursor = await service.list_departments(uow.session, limit, cursor)
    return DepartmentList(items=[department_public(d) for d in rows], next_cursor=next_cursor)


@router.get("/v1/departments/{code}", response_model=DepartmentPublic, tags=["identity"])
async def get_department(code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> DepartmentPublic:
    return department_public(await service.get_department(uow.session, code))


@router.post(
    "/v1/departments/{code}/systems",
    status_code=201,
    response_model=SystemCreated,
    tags=["identity"],
    summary="Register a system: client_secret_basic (its secret shown once) or private_key_jwt (its JWKS)",
    responses=problem_responses(CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND, GatewayProblem.INVALID_JWKS_URI),
)
async def create_system(
    code: str, body: SystemCreate, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> SystemCreated:
    system, secret = await service.create_system(uow.session, principal, code, body, settings_of(request))
    changed(
        request, uow, principal, AuditAction.IDENTITY_CHANGED, system.client_id, f"system.create.{system.auth_method}"
    )
    return SystemCreated(
        client_id=system.client_id,
        client_secret=secret,
        dept=system.dept_code,
        name=system.name,
        roles=system.roles,
        auth_method=system.auth_method,
        jwks_uri=system.jwks_uri,
        tls_client_certificate_bound_access_tokens=system.certificate_bound,
    )


def system_public(system: System, locked_until: datetime | None = None) -> SystemPublic:
    return SystemPublic(
        client_id=system.client_id,
        dept=system.dept_code,
        name=system.name,
        roles=system.roles,
        auth_method=system.auth_method,
        jwks_uri=system.jwks_uri,
        tls_client_certificate_bound_access_tokens=system.certificate_bound,
        status=system.status,
        locked_until=locked_until,
    )


@router.get(
    "/v1/systems",
    response_model=SystemList,
    tags=["identity"],
    summary="Systems: every department's (platform_admin, optionally of one department), else one's own department's",
)
async def list_systems(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    department: Annotated[str | None, Query(max_length=18)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> SystemList:
    rows, next_cursor = await service.list_systems(uow.session, principal, limit, cursor, department)
    locked = await service.lockouts(uow.session, PrincipalType.SYSTEM, [s.client_id for s in rows])
    return SystemList(items=[system_public(s, locked.get(s.client_id)) for s in rows], next_cursor=next_cursor)


@router.get("/v1/systems/{client_id}", response_model=SystemPublic, tags=["identity"])
async def get_system(client_id: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> SystemPublic:
    system = await service.get_system(uow.session, principal, client_id)
    locked = await service.lockouts(uow.session, PrincipalType.SYSTEM, [system.client_id])
    return system_public(system, locked.get(system.client_id))


ADMIN_PROBLEMS = (CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND)


def client_keys_public(system: System) -> ClientKeysPublic:
    return ClientKeysPublic(client_id=system.client_id, jwks=system.jwks, jwks_uri=system.jwks_uri)


@router.get(
    "/v1/systems/{client_id}/jwks",
    response_model=ClientKeysPublic,
    tags=["identity"],
    summary="A private_key_jwt system's registered public keys",
    responses=problem_responses(*ADMIN_PROBLEMS, GatewayProblem.WRONG_AUTH_METHOD),
)
async def get_client_keys(client_id: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> ClientKeysPublic:
    system = await service.managed_system(uow.session, principal, client_id)
    if system.auth_method != AuthMethod.PRIVATE_KEY_JWT:
        raise GatewayProblem.WRONG_AUTH_METHOD.problem(f"{system.client_id} uses {system.auth_method}.")
    return client_keys_public(system)


@router.put(
    "/v1/systems/{client_id}/jwks",
    response_model=ClientKeysPublic,
    tags=["identity"],
    summary="Replace a private_key_jwt system's public keys (key rotation: register old and new, then new alone)",
    responses=problem_responses(*ADMIN_PROBLEMS, GatewayProblem.WRONG_AUTH_METHOD, GatewayProblem.INVALID_JWKS_URI),
)
async def set_client_keys(
    client_id: str, body: ClientKeysBody, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> ClientKeysPublic:
    system = await service.set_client_keys(uow.session, principal, client_id, body, settings_of(request))
    changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, system.client_id, "system.jwks")
    return client_keys_public(system)


@router.get(
    "/v1/systems/{client_id}/answer-keys",
    response_model=AnswerKeysPublic,
    tags=["identity"],
    summary="A provider system's answer-signing public keys (应答签名公钥)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def get_answer_keys(client_id: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> AnswerKeysPublic:
    system = await service.managed_system(uow.session, principal, client_id)
    return AnswerKeysPublic(client_id=system.client_id, jwks=system.answer_jwks)


@router.put(
    "/v1/systems/{client_id}/answer-keys",
    response_model=AnswerKeysPublic,
    tags=["identity"],
    summary="Register a provider system's answer-signing public keys (its connector's JWKS; rotation: old and new)",
    responses=problem_responses(*ADMIN_PROBLEMS, GatewayProblem.NOT_A_PROVIDER_SYSTEM),
)
async def set_answer_keys(
    client_id: str, body: AnswerKeysBody, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> AnswerKeysPublic:
    system = await service.set_answer_keys(uow.session, principal, client_id, body)
    changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, system.client_id, "system.answer_keys")
    return AnswerKeysPublic(client_id=system.client_id, jwks=system.answer_jwks)


@router.get(
    "/v1/departments/{code}/answer-keys",
    tags=["identity"],
    summary="A department's answer-signing public keys: those its active provider systems registered",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def department_answer_keys(code: str, uow: UnitOfWorkDep) -> dict[str, list[dict[str, object]]]:
    """Public, as the token-signing JWKS is: the exchange fetches a provider's keys here (the
    gateway's registry is the authority on which keys speak for a department), and anyone holding
    an answer may check it with them."""
    return await service.department_answer_keys(uow.session, code)


@router.get(
    "/v1/keys",
    response_model=SigningKeyList,
    tags=["identity"],
    summary="The token-signing keys and their rotation state (platform_admin)",
    responses=problem_responses(CommonProblem.FORBIDDEN),
)
async def list_signing_keys(principal: CurrentPrincipal, uow: UnitOfWorkDep) -> SigningKeyList:
    service.require_platform_admin(principal)
    rows = await keys.rows(uow.session)
    return SigningKeyList(items=[signing_key_public(r) for r in rows])


def signing_key_public(row: SigningKey) -> SigningKeyPublic:
    return SigningKeyPublic(
        kid=row.kid, state=KeyState(row.state), state_since=row.state_since, created_at=row.created_at
    )


@router.post(
    "/v1/keys/rotate",
    response_model=SigningKeyList,
    tags=["identity"],
    summary="Rotate the token-signing keys: next becomes current, current previous (platform_admin)",
    responses=problem_responses(CommonProblem.FORBIDDEN, GatewayProblem.ROTATION_TOO_SOON),
)
async def rotate_signing_keys(request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> SigningKeyList:
    service.require_platform_admin(principal)
    ring = await keys.rotate(uow.session, request.app.state.key_wrap, settings_of(request).token_ttl_s)
    changed(request, uow, principal, AuditAction.KEY_ROTATED, ring.current.kid or "", "keys.rotate")
    keys.install(
        request.app.state, request.app.state.runtime.verifier, ring
    )  # this replica at once, others within key_refresh_s
    rows = await keys.rows(uow.session)
    return SigningKeyList(items=[signing_key_public(r) for r in rows])


@credentials.post(
    "/v1/systems/{client_id}/secrets",
    status_code=201,
    response_model=SecretCreated,
    tags=["identity"],
    summary="Add a client secret (rotation); shown once",
    responses=problem_responses(*ADMIN_PROBLEMS, GatewayProblem.TOO_MANY_SECRETS),
)
async def rotate_secret(
    client_id: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> SecretCreated:
    row, secret = await service.rotate_secret(uow.session, principal, client_id)
    changed(request, uow, principal, AuditAction.SECRET_ROTATED, client_id, f"secret.add.{row.id}")
    return SecretCreated(id=row.id, client_secret=secret, created_at=row.created_at)


@router.get(
    "/v1/systems/{client_id}/secrets",
    response_model=SecretList,
    tags=["identity"],
    summary="A system's active client secrets (never the secrets themselves)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def list_secrets(client_id: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> SecretList:
    system = await service.managed_system(uow.session, principal, client_id)
    rows = await service.client_secrets(uow.session, system.client_id)
    return SecretList(items=[SecretPublic.model_validate(r, from_attributes=True) for r in rows])


@router.delete(
    "/v1/systems/{client_id}/secrets/{secret_id}",
    status_code=204,
    tags=["identity"],
    summary="Retire a client secret; it stops working at once",
    responses=problem_responses(*ADMIN_PROBLEMS, GatewayProblem.LAST_SECRET),
)
async def retire_secret(
    client_id: str, secret_id: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> Response:
    await service.retire_secret(uow.session, principal, client_id, secret_id)
    changed(request, uow, principal, AuditAction.SECRET_ROTATED, client_id, f"secret.retire.{secret_id}")
    return Response(status_code=204)


@router.post("/v1/users", status_code=201, response_model=UserPublic, tags=["identity"])
async def create_user(
    body: UserCreate, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> UserPublic:
    user = await service.create_user(uow.session, principal, body)
    changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, user.username, "user.create")
    return UserPublic(username=user.username, department=user.dept_code, roles=user.roles)


def user_account(account: service.UserAccount) -> UserAccount:
    user, locked_until = account
    return UserAccount(
        username=user.username,
        department=user.dept_code,
        roles=user.roles,
        status=user.status,
        locked_until=locked_until,
        created_at=user.created_at,
    )


@router.get(
    "/v1/users",
    response_model=UserList,
    tags=["identity"],
    summary="People's accounts, with whether each is disabled or locked out (platform_admin)",
    responses=problem_responses(CommonProblem.FORBIDDEN),
)
async def list_users(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    department: Annotated[str | None, Query(max_length=18)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> UserList:
    rows, next_cursor = await service.list_users(uow.session, principal, limit, cursor, department)
    return UserList(items=[user_account(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/v1/users/{username}",
    response_model=UserAccount,
    tags=["identity"],
    summary="A person's account (platform_admin)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def get_user(username: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> UserAccount:
    return user_account(await service.get_user(uow.session, principal, username))


@router.put(
    "/v1/users/{username}/roles",
    response_model=UserPublic,
    tags=["identity"],
    summary="Re-role a person: their next token carries these roles (platform_admin)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def set_user_roles(
    username: str, body: UserRoles, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> UserPublic:
    user = await service.set_user_roles(uow.session, principal, username, list(body.roles))
    changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, user.username, "user.roles")
    return UserPublic(username=user.username, department=user.dept_code, roles=user.roles)


# --------------------------------------------------------------------------- disable and enable (停用 / 启用)

# New tokens stop at once; tokens already issued stop when they expire (token_ttl_s, 15 minutes by
# default), or at once for callers that ask POST /oauth2/introspect.
STATUS_PATHS = {Status.DISABLED: "disable", Status.ACTIVE: "enable"}


def add_status_routes(status: Status) -> None:
    verb = STATUS_PATHS[status]

    @router.post(
        f"/v1/departments/{{code}}/{verb}",
        response_model=StatusPublic,
        tags=["identity"],
        summary=f"{verb.capitalize()} a department (platform_admin)",
        responses=problem_responses(*ADMIN_PROBLEMS, GatewayProblem.CANNOT_DISABLE_SELF),
    )
    async def department_status(
        code: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
    ) -> StatusPublic:
        department = await service.set_department_status(uow.session, principal, code, status)
        changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, department.code, f"department.{verb}")
        return StatusPublic(id=department.code, status=department.status)

    @router.post(
        f"/v1/systems/{{client_id}}/{verb}",
        response_model=StatusPublic,
        tags=["identity"],
        summary=f"{verb.capitalize()} a system (platform_admin, or the department's data_admin)",
        responses=problem_responses(*ADMIN_PROBLEMS),
    )
    async def system_status(
        client_id: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
    ) -> StatusPublic:
        system = await service.set_system_status(uow.session, principal, client_id, status)
        changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, system.client_id, f"system.{verb}")
        return StatusPublic(id=system.client_id, status=system.status)

    @router.post(
        f"/v1/users/{{username}}/{verb}",
        response_model=StatusPublic,
        tags=["identity"],
        summary=f"{verb.capitalize()} a person (platform_admin)",
        responses=problem_responses(*ADMIN_PROBLEMS, GatewayProblem.CANNOT_DISABLE_SELF),
    )
    async def user_status(
        username: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
    ) -> StatusPublic:
        user = await service.set_user_status(uow.session, principal, username, status)
        changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, user.username, f"user.{verb}")
        return StatusPublic(id=user.username, status=user.status)


for _status in STATUS_PATHS:
    add_status_routes(_status)


@router.post(
    "/v1/users/{username}/unlock",
    status_code=204,
    tags=["identity"],
    summary="Lift a person's lockout at once (platform_admin)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def unlock_user(username: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> Response:
    await service.unlock_user(uow.session, principal, username)
    changed(request, uow, principal, AuditAction.UNLOCK, username, "user.unlock")
    return Response(status_code=204)


@router.post(
    "/v1/systems/{client_id}/unlock",
    status_code=204,
    tags=["identity"],
    summary="Lift a system's lockout at once (platform_admin, or the department's data_admin)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def unlock_system(client_id: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> Response:
    await service.unlock_system(uow.session, principal, client_id)
    changed(request, uow, principal, AuditAction.UNLOCK, client_id, "system.unlock")
    return Response(status_code=204)


# --------------------------------------------------------------------------- rate limits (限流)


def rate_limit_public(request: Request, client_id: str, row: RateLimit | None) -> RateLimitPublic:
    if row is None:
        s = settings_of(request)
        return RateLimitPublic(
            client_id=client_id, rate_per_s=s.rate_limit_per_s, burst=s.rate_limit_burst, default=True
        )
    return RateLimitPublic(client_id=client_id, rate_per_s=row.rate_per_s, burst=row.burst, default=False)


@router.get(
    "/v1/systems/{client_id}/rate-limit",
    response_model=RateLimitPublic,
    tags=["identity"],
    summary="A system's rate limit for the services behind the gateway (platform_admin)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def get_rate_limit(
    client_id: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> RateLimitPublic:
    return rate_limit_public(request, client_id, await ratelimit.system_limit(uow.session, principal, client_id))


@router.put(
    "/v1/systems/{client_id}/rate-limit",
    response_model=RateLimitPublic,
    tags=["identity"],
    summary="Give a system its own rate limit; it applies from its next lease (platform_admin)",
    responses=problem_responses(*ADMIN_PROBLEMS, CommonProblem.VALIDATION),
)
async def set_rate_limit(
    client_id: str, body: RateLimitSet, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> RateLimitPublic:
    row = await ratelimit.set_system_limit(uow.session, principal, client_id, body.rate_per_s, body.burst)
    changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, client_id, "system.rate_limit.set")
    return rate_limit_public(request, client_id, row)


@router.delete(
    "/v1/systems/{client_id}/rate-limit",
    status_code=204,
    tags=["identity"],
    summary="Put a system back on the default rate limit (platform_admin)",
    responses=problem_responses(*ADMIN_PROBLEMS),
)
async def reset_rate_limit(
    client_id: str, request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> Response:
    await ratelimit.reset_system_limit(uow.session, principal, client_id)
    changed(request, uow, principal, AuditAction.IDENTITY_CHANGED, client_id, "system.rate_limit.reset")
    return Response(status_code=204)


# Last, after every route of ``credentials`` is declared: include_router copies the routes it has now.
router.include_router(credentials)


# --------------------------------------------------------------------------- proxy


def forwarded_target(raw_path: bytes, query_string: bytes, prefix: str) -> str:
    """The already-encoded path and query to send upstream, exactly as checked here.

    Refuses (400 ``invalid-path``) a path outside ``prefix``, with a ``.`` or ``..`` segment
    (literal or percent-encoded, any case), an encoded slash or backslash, a backslash or a broken
    percent escape: each could make the service behind resolve it to another place than the one
    the route names (e.g. ``/v1/exchange/%2e%2e/%2e%2e/openapi.json``, the internal ``/openapi.json``).
    """
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        # Clients should percent-encode; a raw UTF-8 byte (checked as text by the middleware) is
        # encoded here rather than refused.
        path = quote(raw_path, safe=PATH_SAFE)
    if not path.startswith(prefix):
        raise CommonProblem.INVALID_PATH.problem(f"The path must start with {prefix}.")
    lowered = path.lower()
    if "\\" in path or "%2f" in lowered or "%5c" in lowered or BROKEN_ESCAPE.search(path):
        raise CommonProblem.INVALID_PATH.problem("Encoded slashes, backslashes and broken %-escapes are not allowed.")
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        raise CommonProblem.INVALID_PATH.problem("Dot segments (. and ..) are not allowed in a path.")
    query = quote(query_string, safe=QUERY_SAFE)
    return path + (f"?{query}" if query else "")


async def proxy(request: Request, service_name: str, prefix: str) -> Response:
    """Forward to a replica of the owning service after checking the path and the token here too
    (fail fast at the door). The request id and ``traceparent`` sent on are this request's checked
    ones; the client's own ``X-Forwarded-*`` are dropped (only FORWARD_REQUEST_HEADERS pass) and
    replaced by what the gateway saw itself.

    The request body is read whole (the middleware caps it at ``max_body_bytes``) so that it can be
    sent again to another replica; the answer is streamed unless it is small and of known length."""
    target = forwarded_target(
        request.scope.get("raw_path") or request.url.path.encode(), request.scope.get("query_string", b""), prefix
    )
    principal = await request.app.state.runtime.verifier.verify(bearer_token(request.headers.get("authorization")))
    require_certificate(principal, certificate_of(request))  # RFC 8705: a bound token needs its certificate
    if (found := authorization.rule_of_path(request.method, target.partition("?")[0])) is not None:
        authorization.authorize(found[0], principal, found[1])
    limits = await ratelimiter_of(request).check_api(principal)
    headers = {k: v for k, v in request.headers.items() if k in FORWARD_REQUEST_HEADERS}
    headers.update(context_headers())
    headers["x-forwarded-for"] = source_of(request)
    headers["x-forwarded-proto"] = request.scope["scheme"]  # not request.url: it builds the whole URL
    upstreams: Upstreams = request.app.state.upstreams
    try:
        upstream_response = await upstreams.send(service_name, request.method, target, headers, await request.body())
    except UpstreamFailed as err:
        problem = GatewayProblem.UPSTREAM_TIMEOUT if err.timeout else GatewayProblem.UPSTREAM_UNAVAILABLE
        raise problem.problem(f"{service_name}: {err}") from err
    out_headers = response_headers(upstream_response.headers, upstream_response.headers.get("connection"))
    out_headers.pop("x-request-id", None)  # the middleware sets it
    out_headers.update(limits)
    length = upstream_response.content_length
    if length is not None and length <= SMALL_ANSWER_BYTES:
        try:
            content = await upstream_response.read()
        except aiohttp.ClientError as err:
            raise GatewayProblem.UPSTREAM_UNAVAILABLE.problem(f"{service_name}: {err}") from err
        finally:
            upstream_response.release()
        return Response(content, status_code=upstream_response.status, headers=out_headers)
    return StreamingResponse(body_of(upstream_response), status_code=upstream_response.status, headers=out_headers)


# What a browser's request to the console carries that the console needs: its session cookie,
# its language, htmx's headers and the CSRF token htmx sends. Never an Authorization header: the
# console calls the API with the person's token itself.
PAGE_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "content-type",
        "cookie",
        "hx-current-url",
        "hx-request",
        "hx-target",
        "hx-trigger",
        "x-csrf-token",
    }
)


async def forward_page(request: Request, service_name: str, prefix: str) -> Response:
    """Forward a browser's request to the console, as it came: the console authenticates its own
    session (an encrypted cookie) and calls the API, where every check of :func:`proxy` applies,
    with the person's token. The path is checked as a proxied one is. The console sets at most
    one cookie per answer (a plain dict of headers would keep only the last ``Set-Cookie``)."""
    target = forwarded_target(
        request.scope.get("raw_path") or request.url.path.encode(), request.scope.get("query_string", b""), prefix
    )
    headers = {k: v for k, v in request.headers.items() if k in PAGE_REQUEST_HEADERS}
    headers.update(context_headers())
    headers["x-forwarded-for"] = source_of(request)
    headers["x-forwarded-proto"] = request.scope["scheme"]
    upstreams: Upstreams = request.app.state.upstreams
    try:
        answer = await upstreams.send(
            service_name, request.method, target, headers, await request.body(), follow_redirects=False
        )
    except UpstreamFailed as err:
        problem = GatewayProblem.UPSTREAM_TIMEOUT if err.timeout else GatewayProblem.UPSTREAM_UNAVAILABLE
        raise problem.problem(f"{service_name}: {err}") from err
    out_headers = response_headers(answer.headers, answer.headers.get("connection"))
    out_headers.pop("x-request-id", None)  # the middleware sets it
    return StreamingResponse(body_of(answer), status_code=answer.status, headers=out_headers)


PROXY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOWED = ", ".join(PROXY_METHODS)  # the Allow header of a 405


@dataclass(frozen=True, slots=True)
class Proxied:
    """A service behind the gateway and the path prefix it owns. It is also what ``scope["route"]``
    holds for a proxied request, so that the metrics and the access log of ServiceMiddleware name
    it by ``path`` as they name a route."""

    service: str
    prefix: str
    pages: bool = False  # a browser's pages (the console): no bearer token, forward_page

    @property
    def path(self) -> str:
        return self.prefix + "{path:path}"

    def owns(self, path: str) -> bool:
        if self.prefix.endswith("/"):
            return path.startswith(self.prefix)
        return path == self.prefix or path.startswith(self.prefix + "/")


PROXIED_SERVICES = (
    Proxied("registry", "/v1/registry/"),
    Proxied("exchange", "/v1/exchange/"),
    Proxied("audit", "/v1/audit/"),
    Proxied("console", "/console", pages=True),
)


def proxied_of(path: str) -> Proxied | None:
    for proxied in PROXIED_SERVICES:
        if proxied.owns(path):
            return proxied
    return None


class PassThrough:
    """Pure ASGI: a request under a service's prefix goes straight to :func:`proxy`, without
    FastAPI's routing, dependency solving and exception layers (at about a fifth of the gateway's
    CPU per pass-through in the profile under make bench-gateway); anything else goes on to FastAPI.

    It runs inside ServiceMiddleware (request id, trace context, text-only path, body limit,
    security headers, metrics, access log) and mtls.ClientCertificates, so a proxied request gets
    all of those as before, and every check of :func:`proxy` (token, certificate binding, the
    EDGE_RULES row of the path, rate limit). A :class:`Problem` is answered here as the exception
    handler would; anything else propagates to ServiceMiddleware, which answers 500/503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxied = proxied_of(scope["path"]) if scope["type"] == "http" else None
        if proxied is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = proxied  # in place: ServiceMiddleware reads it from this scope
        try:
            if scope["method"] not in PROXY_METHODS:
                # What Starlette answers for a route's other methods (install_error_handlers).
                raise Problem(405, CommonProblem.METHOD_NOT_ALLOWED, "Method Not Allowed", headers={"Allow": ALLOWED})
            forward = forward_page if proxied.pages else proxy
            response = await forward(Request(scope, receive), proxied.service, proxied.prefix)
        except Problem as problem:
            response = problem_response(problem)
        await response(scope, receive, send)

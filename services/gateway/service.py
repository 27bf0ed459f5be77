"""Identity rules of the gateway: who may create what, how clients and people authenticate,
and what a token says. No HTTP here."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from joserfc import jwt
from joserfc.jwk import ECKey
from joserfc.jws import extract_compact
from sqlalchemy import any_, delete, func, literal, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.errors import NotFound, Problem
from services.common.pagination import one_more, page
from services.common.schemas import storable_text_problem
from services.common.security import (
    CNF_CLAIM,
    CNF_THUMBPRINT,
    PRINCIPAL_TYPE_CLAIM,
    Principal,
    PrincipalType,
    Role,
    TokenVerifier,
    forbidden,
)
from services.gateway import assertions
from services.gateway.config import GatewaySettings
from services.gateway.hashing import hash_secret, verify_secret
from services.gateway.models import AuthMethod, ClientSecret, Department, SignInFailures, Status, System, User
from services.gateway.problems import GatewayProblem
from services.gateway.schemas import AnswerKeysBody, ClientKeysBody, DepartmentCreate, SystemCreate, UserCreate

# Client ids are "sys-" + random hex; usernames may not start with it (schemas.UserCreate), so a
# person can never be mistaken for a system by name.
CLIENT_ID_PREFIX = "sys-"
CLIENT_ID_MAX_LENGTH = 64
# Rotation: a new secret is added while the old one still works; a third waits until one is retired.
MAX_ACTIVE_SECRETS = 2


class OAuthError(Problem):
    """RFC 6749 §5.2 error: problem+json that also carries ``error`` and ``error_description``."""

    def __init__(
        self, code: GatewayProblem, description: str, *, error: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        error = error or code.value.removeprefix("oauth2-").replace("-", "_")
        headers = dict(headers or {})
        if error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="tongban"'
        super().__init__(
            code.status,
            code,
            code.headline,
            description,
            extra={"error": error, "error_description": description},
            headers=headers,
        )


# --------------------------------------------------------------------------- departments


def require_platform_admin(principal: Principal) -> None:
    if not principal.has_role(Role.PLATFORM_ADMIN):
        raise forbidden("Only a platform administrator may do this.")


async def create_department(session: AsyncSession, principal: Principal, body: DepartmentCreate) -> Department:
    require_platform_admin(principal)
    if body.parent_code is not None and await session.get(Department, body.parent_code) is None:
        raise GatewayProblem.UNKNOWN_PARENT.problem(f"No department {body.parent_code}.")
    if await session.get(Department, body.code) is not None:
        raise GatewayProblem.DEPARTMENT_EXISTS.problem(f"Department {body.code} is already registered.")
    department = Department(**body.model_dump())
    session.add(department)
    await session.flush()
    return department


async def list_departments(
    session: AsyncSession, limit: int, cursor: str | None
) -> tuple[list[Department], str | None]:
    query = one_more(select(Department).order_by(Department.code), limit)
    if cursor:
        query = query.where(Department.code > cursor)
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda d: d.code)


async def get_department(session: AsyncSession, code: str) -> Department:
    department = await session.get(Department, code.upper())
    if department is None:
        raise NotFound("department", code)
    return department


# --------------------------------------------------------------------------- systems and people


def may_manage_systems_of(principal: Principal, dept_code: str) -> bool:
    """A platform administrator, or the department's own data administrator (数据管理员)."""
    return principal.has_role(Role.PLATFORM_ADMIN) or (
        principal.has_role(Role.DATA_ADMIN) and principal.dept == dept_code
    )


def check_jwks_uri(uri: str | None, settings: GatewaySettings) -> None:
    if uri is not None and (problem := assertions.jwks_uri_problem(uri, settings)) is not None:
        raise GatewayProblem.INVALID_JWKS_URI.problem(problem)


async def create_system(
    session: AsyncSession, principal: Principal, dept_code: str, body: SystemCreate, settings: GatewaySettings
) -> tuple[System, str | None]:
    """Register a system. With ``client_secret_basic`` its first secret is returned (once); with
    ``private_key_jwt`` its public keys are kept (a JWKS, or a ``jwks_uri``) and there is no secret."""
    department = await get_department(session, dept_code)
    if not may_manage_systems_of(principal, department.code):
        raise forbidden("Only a platform administrator or this department's data administrator may register systems.")
    check_jwks_uri(body.jwks_uri, settings)
    system = System(
        client_id=CLIENT_ID_PREFIX + secrets.token_hex(8),
        dept_code=department.code,
        name=body.name,
        roles=sorted(set(body.roles)),
        auth_method=body.auth_method,
        jwks=body.jwks,
        jwks_uri=body.jwks_uri,
        certificate_bound=body.tls_client_certificate_bound_access_tokens,
    )
    session.add(system)
    await session.flush()
    if system.auth_method == AuthMethod.PRIVATE_KEY_JWT:
        return system, None
    _, secret = await add_secret(session, system)
    return system, secret


async def set_client_keys(
    session: AsyncSession, principal: Principal, client_id: str, body: ClientKeysBody, settings: GatewaySettings
) -> System:
    """Replace a private_key_jwt system's public keys (公钥轮换): the new JWKS (or jwks_uri) holds
    from the next assertion on. To rotate without downtime, register old and new key together,
    switch the client to the new one, then register the new one alone."""
    system = await managed_system(session, principal, client_id)
    if system.auth_method != AuthMethod.PRIVATE_KEY_JWT:
        raise GatewayProblem.WRONG_AUTH_METHOD.problem(
            f"{system.client_id} uses {system.auth_method}, not private_key_jwt."
        )
    check_jwks_uri(body.jwks_uri, settings)
    system.jwks, system.jwks_uri = body.jwks, body.jwks_uri
    await session.flush()
    return system


async def set_answer_keys(session: AsyncSession, principal: Principal, client_id: str, body: AnswerKeysBody) -> System:
    """Register a provider system's answer-signing public keys (应答签名公钥), replacing those it
    had: the exchange verifies the department's SD-JWT answers with these and no others. To rotate,
    register old and new together; drop the old once no answer signed with it needs verifying."""
    system = await managed_system(session, principal, client_id)
    if Role.PROVIDER not in system.roles:
        raise GatewayProblem.NOT_A_PROVIDER_SYSTEM.problem(
            f"{system.client_id} does not hold the provider role: only a provider system signs answers."
        )
    system.answer_jwks = body.jwks
    await session.flush()
    return system


async def department_answer_keys(session: AsyncSession, dept_code: str) -> dict[str, list[dict[str, object]]]:
    """The answer-signing public keys of department ``dept_code``: those its active provider
    systems registered (the authority the exchange verifies that department's answers with). A
    kid two systems registered with different keys is left out: which key it names is unknown."""
    department = await get_department(session, dept_code)
    rows = await session.scalars(
        select(System.answer_jwks)
        .where(
            System.dept_code == department.code,
            System.status == Status.ACTIVE,
            literal(Role.PROVIDER.value) == any_(System.roles),
            System.answer_jwks.is_not(None),
        )
        .order_by(System.client_id)
    )
    by_kid: dict[str, dict[str, object]] = {}
    ambiguous: set[str] = set()
    for jwks in rows:
        for key in (jwks or {}).get("keys", []):
            kid = key["kid"]
            if by_kid.setdefault(kid, key) != key:
                ambiguous.add(kid)
    return {"keys": [key for kid, key in by_kid.items() if kid not in ambiguous]}


async def add_secret(session: AsyncSession, system: System) -> tuple[ClientSecret, str]:
    """A new random secret (256 bits) for ``system``; only its hash is kept, the secret is returned once."""
    secret = secrets.token_urlsafe(32)
    row = ClientSecret(id=secrets.token_hex(8), client_id=system.client_id, secret_hash=await hash_secret(secret))
    session.add(row)
    await session.flush()
    return row, secret


async def managed_system(session: AsyncSession, principal: Principal, client_id: str) -> System:
    """The system, if ``principal`` may administer it; another department's is NotFound."""
    system = await get_system(session, principal, client_id)
    if not may_manage_systems_of(principal, system.dept_code):
        raise forbidden("Only a platform administrator or this department's data administrator may do this.")
    return system


async def client_secrets(session: AsyncSession, client_id: str) -> list[ClientSecret]:
    """The system's active secrets, newest first."""
    query = (
        select(ClientSecret)
        .where(ClientSecret.client_id == client_id)
        .order_by(ClientSecret.created_at.desc(), ClientSecret.id)
    )
    return list((await session.scalars(query)).all())


async def rotate_secret(session: AsyncSession, principal: Principal, client_id: str) -> tuple[ClientSecret, str]:
    """Secret rotation (密钥轮换), step one: a second secret, valid beside the current one until
    that one is retired. Refused while two are active, so no secret stops working unannounced."""
    system = await managed_system(session, principal, client_id)
    if system.auth_method != AuthMethod.CLIENT_SECRET_BASIC:
        raise GatewayProblem.WRONG_AUTH_METHOD.problem(
            f"{system.client_id} uses {system.auth_method}: it has no secrets."
        )
    # Lock the system's row: two concurrent rotations must not both see one secret and make three.
    await session.refresh(system, with_for_update=True)
    if len(await client_secrets(session, system.client_id)) >= MAX_ACTIVE_SECRETS:
        raise GatewayProblem.TOO_MANY_SECRETS.problem(
            f"{system.client_id} already has {MAX_ACTIVE_SECRETS} active secrets; retire one first."
        )
    return await add_secret(session, system)


async def retire_secret(session: AsyncSession, principal: Principal, client_id: str, secret_id: str) -> None:
    """Secret rotation, step two: the old secret stops working at once. The last one is kept
    (disable the system to stop it altogether)."""
    system = await managed_system(session, principal, client_id)
    await session.refresh(system, with_for_update=True)
    active = await client_secrets(session, system.client_id)
    target = next((s for s in active if s.id == secret_id), None)
    if target is None:
        raise NotFound("secret", secret_id)
    if len(active) == 1:
        raise GatewayProblem.LAST_SECRET.problem(
            "This is the system's only secret; add a new one first, or disable the system."
        )
    await session.delete(target)
    await session.flush()


async def get_system(session: AsyncSession, principal: Principal, client_id: str) -> System:
    system = await session.get(System, client_id)
    # Same answer for "absent" and "not yours", so existence does not leak.
    if system is None or not (principal.has_role(Role.PLATFORM_ADMIN) or principal.dept == system.dept_code):
        raise NotFound("system", client_id)
    return system


async def list_systems(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None, department: str | None
) -> tuple[list[System], str | None]:
    """Systems by client id: a platform administrator's of every department (or of ``department``),
    anyone else's of their own department only, as :func:`get_system` shows them."""
    query = one_more(select(System).order_by(System.client_id), limit)
    if not principal.has_role(Role.PLATFORM_ADMIN):
        query = query.where(System.dept_code == principal.dept)
    if department:
        query = query.where(System.dept_code == department.upper())
    if cursor:
        query = query.where(System.client_id > cursor)
    return page(list((await session.scalars(query)).all()), limit, lambda s: s.client_id)


# A person's account with the end of their lockout, if they are locked out now.
UserAccount = tuple[User, datetime | None]


async def lockouts(session: AsyncSession, kind: PrincipalType, names: list[str]) -> dict[str, datetime]:
    """The end of the lockout of each of ``names`` (people or systems) locked out now."""
    query = select(SignInFailures.name, SignInFailures.locked_until).where(
        SignInFailures.kind == kind.value, SignInFailures.name.in_(names), SignInFailures.locked_until > func.now()
    )
    return {row.name: row.locked_until for row in (await session.execute(query)).all()}


async def with_lockouts(session: AsyncSession, users: list[User]) -> list[UserAccount]:
    """Each of ``users`` with the end of their lockout (None: not locked out now)."""
    locked = await lockouts(session, PrincipalType.PERSON, [u.username for u in users])
    return [(u, locked.get(u.username)) for u in users]


async def list_users(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None, department: str | None
) -> tuple[list[UserAccount], str | None]:
    """People's accounts by username, with their lockouts (a platform administrator's)."""
    require_platform_admin(principal)
    query = one_more(select(User).order_by(User.username), limit)
    if department:
        query = query.where(User.dept_code == department.upper())
    if cursor:
        query = query.where(User.username > cursor)
    users, next_cursor = page(list((await session.scalars(query)).all()), limit, lambda u: u.username)
    return await with_lockouts(session, users), next_cursor


async def get_user(session: AsyncSession, principal: Principal, username: str) -> UserAccount:
    require_platform_admin(principal)
    user = await session.get(User, username)
    if user is None:
        raise NotFound("user", username)
    return (await with_lockouts(session, [user]))[0]


async def set_user_roles(session: AsyncSession, principal: Principal, username: str, roles: list[str]) -> User:
    """Re-role a person (a platform administrator's): their next token carries ``roles``. Not
    one's own platform_admin role away (as one may not disable oneself)."""
    require_platform_admin(principal)
    user = await session.get(User, username)
    if user is None:
        raise NotFound("user", username)
    if principal.is_person and principal.sub == user.username and Role.PLATFORM_ADMIN not in roles:
        raise forbidden("You cannot take away your own platform_admin role (不能取消自己的平台管理员角色).")
    user.roles = sorted(set(roles))
    await session.flush()
    return user


async def create_user(session: AsyncSession, principal: Principal, body: UserCreate) -> User:
    require_platform_admin(principal)
    await get_department(session, body.department)
    user = User(
        username=body.username,
        dept_code=body.department,
        password_hash=await hash_secret(body.password),
        roles=sorted(set(body.roles)),
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as err:
        raise GatewayProblem.USER_EXISTS.problem(f"User {body.username!r} already exists.") from err
    return user


# --------------------------------------------------------------------------- disable and enable (停用 / 启用)


async def set_department_status(session: AsyncSession, principal: Principal, code: str, status: Status) -> Department:
    """Disable (停用) or enable a department: while disabled, none of its systems or people gets a
    new token. A platform administrator's; not their own department (they would lock themselves out)."""
    require_platform_admin(principal)
    department = await get_department(session, code)
    if status is Status.DISABLED and department.code == principal.dept:
        raise GatewayProblem.CANNOT_DISABLE_SELF.problem("You cannot disable your own department.")
    department.status = status
    await session.flush()
    return department


async def set_system_status(session: AsyncSession, principal: Principal, client_id: str, status: Status) -> System:
    """Disable or enable a system: while disabled, its token requests are refused. A platform
    administrator's, or the department's data administrator's."""
    system = await managed_system(session, principal, client_id)
    system.status = status
    await session.flush()
    return system


async def set_user_status(session: AsyncSession, principal: Principal, username: str, status: Status) -> User:
    """Disable or enable a person: while disabled, their logins are refused. A platform
    administrator's; not their own account."""
    require_platform_admin(principal)
    user = await session.get(User, username)
    if user is None:
        raise NotFound("user", username)
    if status is Status.DISABLED and principal.is_person and principal.sub == user.username:
        raise GatewayProblem.CANNOT_DISABLE_SELF.problem("You cannot disable your own account.")
    user.status = status
    await session.flush()
    return user


async def is_active(session: AsyncSession, dept_code: str, status: Status) -> bool:
    """A principal may get and use tokens while it and its department are both active."""
    department = await session.get(Department, dept_code)
    return status == Status.ACTIVE and department is not None and department.status == Status.ACTIVE


BOOTSTRAP_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('tongban.gateway.bootstrap'))")


async def bootstrap(session: AsyncSession, settings: GatewaySettings) -> None:
    """First start: the platform operator's department and, if a password is configured, ``admin``."""
    # Replicas starting together on an empty database take turns (held until the commit): else
    # both see no department, both insert it, and one fails to start on the duplicate key.
    await session.execute(BOOTSTRAP_LOCK)
    if await session.get(Department, settings.platform_dept_code) is None:
        session.add(
            Department(
                code=settings.platform_dept_code,
                name=settings.platform_dept_name,
                region_code=settings.platform_dept_code[2:8],
                level="city",
                parent_code=None,
            )
        )
        await session.flush()
    users = await session.scalar(select(func.count()).select_from(User))
    if users == 0 and settings.bootstrap_admin_password:
        session.add(
            User(
                username="admin",
                dept_code=settings.platform_dept_code,
                password_hash=await hash_secret(settings.bootstrap_admin_password),
                roles=["platform_admin"],
            )
        )


# --------------------------------------------------------------------------- lockout (锁定)


@dataclass
class Lockout:
    """Failed sign-ins per name, and the lockout they lead to: ``threshold`` failures in a row
    lock the name for ``duration_s`` seconds; failures older than that are forgotten.

    A locked name is refused before anything is checked (:meth:`refuse_if_locked`, in the
    request's unit of work). Only a check that *failed* counts (:meth:`failed`), and it is counted
    after the request's unit of work has rolled back (:meth:`settle`, in a transaction of its own
    on ``sessions``): a failure counts although its request fails, a request never holds two
    pooled connections at once, and concurrent requests with the right secret count nothing.
    Counting every attempt before the check, as this once did, locked a client out of a mere
    burst of good requests. The price: requests already past the check when a burst of wrong ones
    reaches the threshold are still checked — as many as are in flight, which the token and login
    rate limits bound. The name's row is locked while it is counted, so replicas counting the same
    name never lose a count.
    """

    sessions: async_sessionmaker[AsyncSession]
    threshold: int
    duration_s: int
    # Told when a failure locks a name (its request's audit trail records the lockout).
    on_lock: Callable[[PrincipalType, str], None] | None = None
    # This request's failed checks, counted by settle().
    failures: list[tuple[PrincipalType, str]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        sessions: async_sessionmaker[AsyncSession],
        settings: GatewaySettings,
        on_lock: Callable[[PrincipalType, str], None] | None = None,
    ) -> Lockout:
        return cls(sessions, settings.lockout_threshold, settings.lockout_s, on_lock)

    async def refuse_if_locked(self, session: AsyncSession, kind: PrincipalType, name: str) -> None:
        """429 (``account-locked`` / ``oauth2-client-locked``) while ``name`` is locked."""
        locked_until = await session.scalar(
            select(SignInFailures.locked_until).where(SignInFailures.kind == kind, SignInFailures.name == name)
        )
        now = datetime.now(UTC)
        if locked_until is not None and locked_until > now:
            raise locked_problem(kind, int((locked_until - now).total_seconds()) + 1)

    def failed(self, kind: PrincipalType, name: str) -> None:
        """The secret or password of ``name`` was wrong: counted by :meth:`settle`."""
        self.failures.append((kind, name))

    async def settle(self, problem: Problem) -> Problem:
        """Count this request's failures, once its unit of work has ended; the problem to answer
        with: ``problem``, or the lockout's if the name is locked now."""
        answer = problem
        for kind, name in self.failures:
            if locked_s := await self.count(kind, name):
                answer = locked_problem(kind, locked_s)
        self.failures.clear()
        return answer

    async def count(self, kind: PrincipalType, name: str) -> int:
        """Count one failure of ``name``; the seconds it is locked for from now on (0: not locked)."""
        now = datetime.now(UTC)
        key = {"kind": kind.value, "name": name}
        # Inserted, or the existing row, locked until this transaction ends: in one statement, so
        # that a success forgetting the row at the same time cannot slip in between.
        fresh = insert(SignInFailures).values(**key, failures=0, last_failed_at=now, locked_until=None)
        upsert = fresh.on_conflict_do_update(
            index_elements=[SignInFailures.kind, SignInFailures.name], set_={"kind": fresh.excluded.kind}
        ).returning(SignInFailures)
        async with self.sessions.begin() as own:
            row = (await own.scalars(upsert)).one()
            if row.locked_until is not None and row.locked_until > now:  # locked meanwhile, by another failure
                return int((row.locked_until - now).total_seconds()) + 1
            stale = row.last_failed_at < now - timedelta(seconds=self.duration_s)
            row.failures = 1 if stale else row.failures + 1
            row.last_failed_at = now
            if row.failures >= self.threshold:
                row.failures, row.locked_until = 0, now + timedelta(seconds=self.duration_s)  # a new count after it
                if self.on_lock is not None:
                    self.on_lock(kind, name)
                return self.duration_s
            return 0


async def forget_failures(session: AsyncSession, kind: PrincipalType, name: str, *, unlock: bool = False) -> None:
    """After a success the failures of ``name`` are forgotten (in the request's own unit of work),
    but not a lockout other requests' failures set meanwhile; ``unlock`` lifts that too (解锁)."""
    forget = delete(SignInFailures).where(SignInFailures.kind == kind, SignInFailures.name == name)
    if not unlock:
        forget = forget.where((SignInFailures.locked_until.is_(None)) | (SignInFailures.locked_until <= func.now()))
    await session.execute(forget)


async def unlock_user(session: AsyncSession, principal: Principal, username: str) -> None:
    """A platform administrator unlocks a person."""
    require_platform_admin(principal)
    if await session.get(User, username) is None:
        raise NotFound("user", username)
    await forget_failures(session, PrincipalType.PERSON, username, unlock=True)


async def unlock_system(session: AsyncSession, principal: Principal, client_id: str) -> None:
    """A platform administrator, or the department's data administrator, unlocks a system."""
    system = await managed_system(session, principal, client_id)
    await forget_failures(session, PrincipalType.SYSTEM, system.client_id, unlock=True)


def locked_problem(kind: PrincipalType, seconds: int) -> Problem:
    detail = f"Too many failed attempts in a row: locked for {seconds} s more (连续失败次数过多，已锁定)."
    headers = {"Retry-After": str(seconds)}
    if kind is PrincipalType.SYSTEM:
        return OAuthError(GatewayProblem.OAUTH2_CLIENT_LOCKED, detail, error="invalid_client", headers=headers)
    return GatewayProblem.ACCOUNT_LOCKED.problem(detail, headers=headers)


# --------------------------------------------------------------------------- tokens


def issue_token(
    key: ECKey,
    settings: GatewaySettings,
    *,
    kind: PrincipalType,
    sub: str,
    dept: str,
    roles: list[str],
    certificate: str | None = None,
) -> tuple[str, int, str]:
    """An RFC 9068 access token. ``kind`` goes into a claim of its own (``principal_type``); a
    system's token also carries ``client_id`` (= ``sub``), a person's never does. ``certificate``:
    the x5t#S256 the token is bound to (RFC 8705), as its ``cnf`` claim."""
    now = int(time.time())
    scope = " ".join(sorted(roles))
    claims: dict[str, object] = {
        "iss": settings.jwt_issuer,
        "sub": sub,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + settings.token_ttl_s,
        "jti": uuid.uuid4().hex,
        PRINCIPAL_TYPE_CLAIM: kind.value,
        "scope": scope,
        "dept": dept,
        "roles": roles,
    }
    if kind is PrincipalType.SYSTEM:
        claims["client_id"] = sub
    if certificate is not None:
        claims[CNF_CLAIM] = {CNF_THUMBPRINT: certificate}
    token = jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}, claims, key)
    return token, settings.token_ttl_s, scope


def parse_basic(authorization: str | None) -> tuple[str, str]:
    if not authorization or not authorization.lower().startswith("basic "):
        raise OAuthError(
            GatewayProblem.OAUTH2_INVALID_CLIENT, "Authenticate the client with HTTP Basic (client_secret_basic)."
        )
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        client_id, _, secret = decoded.partition(":")
    except (ValueError, UnicodeDecodeError) as err:
        raise OAuthError(GatewayProblem.OAUTH2_INVALID_CLIENT, "The Basic credentials are malformed.") from err
    # RFC 6749 §2.3.1: both parts are form-urlencoded. What cannot be a client id (NUL, a lone
    # surrogate, more than a client id's length) is malformed, not a database error.
    client_id, secret = unquote(client_id), unquote(secret)
    if storable_text_problem([client_id, secret]) or not 0 < len(client_id) <= CLIENT_ID_MAX_LENGTH:
        raise OAuthError(GatewayProblem.OAUTH2_INVALID_CLIENT, "The Basic credentials are malformed.")
    return client_id, secret


async def authenticate_client(session: AsyncSession, lockout: Lockout, client_id: str, secret: str) -> System:
    """The system whose secret this is (any of its active ones, newest first).

    A failure always costs :data:`MAX_ACTIVE_SECRETS` hashes — an unknown client id and a system
    with one secret are checked against dummies — so the timing tells neither which client ids
    exist nor how many secrets a system has. Failures count towards a lockout of the client id
    (known or not; counted by ``lockout.settle`` once the request's unit of work has ended); a
    locked one is refused before any hashing.
    """
    await lockout.refuse_if_locked(session, PrincipalType.SYSTEM, client_id)  # first: see Lockout
    system = await session.get(System, client_id)
    candidates: list[ClientSecret | None] = list(await client_secrets(session, client_id)) if system else []
    candidates += [None] * (MAX_ACTIVE_SECRETS - len(candidates))
    for candidate in candidates:
        verdict = await verify_secret(secret, candidate.secret_hash if candidate is not None else None)
        if system is not None and candidate is not None and verdict.ok:
            if not await is_active(session, system.dept_code, system.status):
                # Told only to a client that proved its secret.
                raise OAuthError(
                    GatewayProblem.OAUTH2_UNAUTHORIZED_CLIENT, "This system, or its department, is disabled (停用)."
                )
            if verdict.needs_rehash:  # a sha256$ secret from before argon2id: replaced now that we know it
                candidate.secret_hash = await hash_secret(secret)
            candidate.last_used_at = datetime.now(UTC)
            await forget_failures(session, PrincipalType.SYSTEM, client_id)
            return system
    lockout.failed(PrincipalType.SYSTEM, client_id)
    raise OAuthError(GatewayProblem.OAUTH2_INVALID_CLIENT, "Unknown client or wrong secret.")


async def authenticate_assertion(
    session: AsyncSession, client_keys: assertions.ClientKeys, settings: GatewaySettings, assertion: str
) -> System:
    """The system that signed this private_key_jwt assertion (RFC 7523), if it is active. Not
    counted towards a lockout: a signature cannot be guessed, and counting would let anyone lock
    a system out by sending junk in its name."""
    try:
        system = await assertions.authenticate(session, client_keys, settings, assertion)
    except assertions.AssertionRejected as err:
        raise OAuthError(GatewayProblem.OAUTH2_INVALID_CLIENT, f"Client assertion refused: {err}.") from err
    if not await is_active(session, system.dept_code, system.status):
        raise OAuthError(
            GatewayProblem.OAUTH2_UNAUTHORIZED_CLIENT, "This system, or its department, is disabled (停用)."
        )
    return system


async def authenticate_user(session: AsyncSession, lockout: Lockout, username: str, password: str) -> User:
    """The person with this name and password. An unknown name costs one hash like a wrong
    password (checked against a dummy), so the timing does not tell which names exist. Failures
    count towards a lockout of the name (known or not; counted by ``lockout.settle`` once the request's
    unit of work has ended); a locked one is refused before hashing."""
    await lockout.refuse_if_locked(session, PrincipalType.PERSON, username)  # first: see Lockout
    user = await session.get(User, username)
    verdict = await verify_secret(password, user.password_hash if user is not None else None)
    if user is None or not verdict.ok:
        lockout.failed(PrincipalType.PERSON, username)
        raise GatewayProblem.INVALID_CREDENTIALS.problem("Unknown user or wrong password.")
    if not await is_active(session, user.dept_code, user.status):
        # Told only to someone who knows the password.
        raise GatewayProblem.ACCOUNT_DISABLED.problem("This account, or its department, is disabled (停用).")
    if verdict.needs_rehash:  # a scrypt$ password from before argon2id: replaced now that we know it
        user.password_hash = await hash_secret(password)
    await forget_failures(session, PrincipalType.PERSON, username)
    return user


# --------------------------------------------------------------------------- introspection


async def introspect(session: AsyncSession, verifier: TokenVerifier, token: str) -> dict[str, object]:
    """RFC 7662 token introspection: ``active`` only for a token that verifies, has not expired
    (no leeway here) and whose system or person, and department, are still active — the answer
    for callers that cannot wait for a disabled principal's tokens to expire."""
    inactive: dict[str, object] = {"active": False}
    try:
        principal = await verifier.verify(token)
    except Problem:
        return inactive
    claims = json.loads(extract_compact(token.encode()).payload)  # verified just above
    if int(claims["exp"]) <= time.time():
        return inactive
    if principal.is_system:
        holder: System | User | None = await session.get(System, principal.sub)
    else:
        holder = await session.get(User, principal.sub)
    if (
        holder is None
        or holder.dept_code != principal.dept
        or not await is_active(session, holder.dept_code, holder.status)
    ):
        return inactive
    answer: dict[str, object] = {
        "active": True,
        "token_type": "Bearer",
        **{k: claims[k] for k in ("scope", "sub", "aud", "iss", "exp", "iat", "jti", PRINCIPAL_TYPE_CLAIM, "dept")},
    }
    if principal.is_system:
        answer["client_id"] = principal.client_id
    else:
        answer["username"] = principal.sub
    if principal.cnf_thumbprint is not None:  # RFC 8705 §3.2: the binding, for the resource server to check
        answer[CNF_CLAIM] = {CNF_THUMBPRINT: principal.cnf_thumbprint}
    return answer

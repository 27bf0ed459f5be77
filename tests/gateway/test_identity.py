"""Identity in the gateway: departments, systems and people, and what their tokens say.

A token says in a claim of its own whether it identifies a system or a person; only a system's
carries ``client_id``; usernames never look like client ids. Real PostgreSQL, rolled back per test.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.common.errors import Problem
from services.common.security import PRINCIPAL_TYPE_CLAIM, Principal, PrincipalType, Role, TokenVerifier
from services.gateway import keys, service
from services.gateway.models import Department, System, User
from services.gateway.schemas import SystemCreate, UserCreate
from tests.factories import (
    DepartmentCreateFactory,
    SystemCreateFactory,
    UserCreateFactory,
    credit_code,
    person,
    region_of,
)
from tests.gateway.support import SETTINGS, WRAP, lockout_on


async def count(session: AsyncSession, model: type[Department | System | User]) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def assert_problem(raised: pytest.ExceptionInfo[Problem], status: int, code: str) -> None:
    assert (raised.value.status, raised.value.code) == (status, code), raised.value.body()


# --------------------------------------------------------------------------- departments


async def test_a_platform_admin_registers_a_department(session: AsyncSession, admin: Principal) -> None:
    body = DepartmentCreateFactory.build()

    created = await service.create_department(session, admin, body)

    assert (created.code, created.name, created.region_code) == (body.code, body.name, region_of(body.code))
    assert await service.get_department(session, body.code.lower()) is created


@pytest.mark.parametrize("role", [Role.DATA_ADMIN, Role.APPROVER, Role.AUDITOR])
async def test_only_a_platform_admin_registers_departments(session: AsyncSession, role: Role) -> None:
    with pytest.raises(Problem) as raised:
        await service.create_department(session, person(credit_code(), role), DepartmentCreateFactory.build())

    assert_problem(raised, 403, "forbidden")
    assert await count(session, Department) == 0


async def test_a_department_is_registered_once(session: AsyncSession, admin: Principal, department: Department) -> None:
    again = DepartmentCreateFactory.build(code=department.code, region_code=department.region_code, name="另一个名称")

    with pytest.raises(Problem) as raised:
        await service.create_department(session, admin, again)

    assert_problem(raised, 409, "department-exists")
    assert (await count(session, Department), department.name) == (1, department.name)


async def test_a_parent_department_must_exist(session: AsyncSession, admin: Principal) -> None:
    with pytest.raises(Problem) as raised:
        await service.create_department(session, admin, DepartmentCreateFactory.build(parent_code=credit_code()))

    assert_problem(raised, 422, "unknown-parent")
    assert await count(session, Department) == 0


# --------------------------------------------------------------------------- systems and people


async def test_a_departments_data_admin_registers_its_system(session: AsyncSession, department: Department) -> None:
    data_admin = person(department.code, Role.DATA_ADMIN)

    created, secret = await service.create_system(
        session, data_admin, department.code, SystemCreateFactory.build(), SETTINGS
    )

    assert created.client_id.startswith(service.CLIENT_ID_PREFIX)
    assert created.dept_code == department.code
    [stored] = await service.client_secrets(session, created.client_id)
    assert stored.secret_hash.startswith("$argon2id$") and secret not in stored.secret_hash  # only its hash is kept
    assert await service.authenticate_client(session, lockout_on(session), created.client_id, secret) is created


async def test_the_citizen_portal_is_a_system_with_its_own_role(session: AsyncSession, department: Department) -> None:
    """The citizen portal (市民门户) reads people's access reports from audit: a system whose only
    role is ``citizen_portal`` (the database's CHECK admits it), never a consumer by that."""
    data_admin = person(department.code, Role.DATA_ADMIN)
    body = SystemCreateFactory.build(roles=["citizen_portal"])
    created, _ = await service.create_system(session, data_admin, department.code, body, SETTINGS)
    await session.flush()
    stored = await session.get(System, created.client_id)
    assert stored is not None and stored.roles == ["citizen_portal"]
    with pytest.raises(ValidationError):
        SystemCreate.model_validate({"name": "市民门户", "roles": ["auditor"]})  # a person's role


async def test_another_departments_data_admin_may_not_register_its_systems(
    session: AsyncSession, department: Department
) -> None:
    outsider = person(credit_code(), Role.DATA_ADMIN)

    with pytest.raises(Problem) as raised:
        await service.create_system(session, outsider, department.code, SystemCreateFactory.build(), SETTINGS)

    assert_problem(raised, 403, "forbidden")
    assert await count(session, System) == 0


@pytest.mark.parametrize("username", ["sys-0123456789abcdef", "SYS-admin", "Sys-dibao"])
def test_a_username_may_not_look_like_a_client_id(username: str) -> None:
    with pytest.raises(ValidationError, match="reserved for systems"):
        UserCreateFactory.build(department=credit_code(), username=username)


@pytest.mark.parametrize("username", ["zhang.wei", "sysadmin", "wang-sys-1"])
def test_other_usernames_are_accepted(username: str) -> None:
    assert UserCreate(username=username, password="Tongban-2026", department=credit_code(), roles=["auditor"])


async def test_a_username_is_taken_once(session: AsyncSession, admin: Principal, department: Department) -> None:
    body = UserCreateFactory.build(department=department.code)
    await service.create_user(session, admin, body)

    with pytest.raises(Problem) as raised:
        async with session.begin_nested():  # the route's unit of work: the failed insert rolls back
            await service.create_user(session, admin, body.model_copy(update={"roles": ["auditor"]}))

    assert_problem(raised, 409, "user-exists")
    user = await session.scalar(select(User).where(User.username == body.username))
    assert user is not None and user.roles == ["data_admin"]


# --------------------------------------------------------------------------- tokens


@pytest.fixture
async def key(session: AsyncSession) -> ECKey:
    """The gateway's signing key (created on first use, as on a fresh database)."""
    return (await keys.prepare_ring(session, WRAP)).current


def verifier(key: ECKey) -> TokenVerifier:
    """What every service does with a bearer token, given the gateway's key set."""
    return TokenVerifier(SETTINGS.jwt_issuer, SETTINGS.jwt_audience, keys=KeySet([key]))


def claims_of(token: str, key: ECKey) -> dict[str, object]:
    return dict(jwt.decode(token, KeySet([key]), algorithms=["ES256"]).claims)


async def test_a_systems_token_says_system_and_names_its_client(key: ECKey, department: Department) -> None:
    client_id = service.CLIENT_ID_PREFIX + "0123456789abcdef"
    token, expires_in, scope = service.issue_token(
        key, SETTINGS, kind=PrincipalType.SYSTEM, sub=client_id, dept=department.code, roles=["consumer"]
    )

    claims = claims_of(token, key)
    assert (claims[PRINCIPAL_TYPE_CLAIM], claims["client_id"], claims["sub"]) == ("system", client_id, client_id)
    assert (expires_in, scope) == (900, "consumer")
    principal = await verifier(key).verify(token)
    assert (principal.type, principal.client_id, principal.dept) == (PrincipalType.SYSTEM, client_id, department.code)
    assert principal.is_system and principal.has_role(Role.CONSUMER)


async def test_a_persons_token_says_person_and_carries_no_client_id(key: ECKey, department: Department) -> None:
    token, _, _ = service.issue_token(
        key, SETTINGS, kind=PrincipalType.PERSON, sub="li.na", dept=department.code, roles=["data_admin"]
    )

    claims = claims_of(token, key)
    assert claims[PRINCIPAL_TYPE_CLAIM] == "person"
    assert "client_id" not in claims
    principal = await verifier(key).verify(token)
    assert (principal.type, principal.client_id, principal.sub) == (PrincipalType.PERSON, None, "li.na")
    assert principal.is_person and not principal.is_system


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({PRINCIPAL_TYPE_CLAIM: "person", "client_id": "sys-0123456789abcdef"}, id="person with client_id"),
        pytest.param({PRINCIPAL_TYPE_CLAIM: "system"}, id="system without client_id"),
        pytest.param({"client_id": "sys-0123456789abcdef"}, id="no principal_type"),
        pytest.param({PRINCIPAL_TYPE_CLAIM: "robot"}, id="unknown principal_type"),
    ],
)
async def test_a_token_that_mixes_up_kinds_is_refused(key: ECKey, claims: dict[str, str]) -> None:
    # Signed with the right key: only the claims are wrong, as a gateway bug would make them.
    payload = {
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        "sub": "sys-0123456789abcdef",
        "exp": 2_000_000_000,
        "dept": credit_code(),
        **claims,
    }
    token = jwt.encode({"alg": "ES256", "kid": key.kid}, payload, key)

    with pytest.raises(Problem) as raised:
        await verifier(key).verify(token)

    assert_problem(raised, 401, "unauthorized")


async def test_two_replicas_starting_together_on_an_empty_database_both_start(tier_engine: AsyncEngine) -> None:
    """Two gateways bootstrap at once, each in its own transaction (committed for real, cleaned up
    at the end): the second waits for the first's commit, finds the platform department, and
    starts. Before, it inserted the department too and failed to start on the duplicate key."""
    code = f"11110100MB{secrets.randbelow(10**8):08d}"  # a platform department no other test has
    settings = SETTINGS.model_copy(update={"platform_dept_code": code, "bootstrap_admin_password": None})
    first_done = asyncio.Event()

    async def replica(wait: asyncio.Event | None) -> None:
        async with tier_engine.connect() as connection, connection.begin():
            session = AsyncSession(bind=connection)
            if wait is not None:
                await wait.wait()
            await service.bootstrap(session, settings)
            await session.flush()
            if wait is None:
                first_done.set()
                await asyncio.sleep(0.3)  # the other replica bootstraps while this one has not committed

    try:
        await asyncio.gather(replica(None), replica(first_done))
        async with tier_engine.connect() as connection:
            count = await connection.scalar(select(func.count()).select_from(Department).where(Department.code == code))
    finally:
        async with tier_engine.begin() as connection:
            await connection.execute(delete(Department).where(Department.code == code))
    assert count == 1

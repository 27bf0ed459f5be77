"""Disable and enable (停用 / 启用) departments, systems and people: new tokens stop at once, and
RFC 7662 introspection says a token of a disabled principal is no longer active. Real
PostgreSQL, rolled back per test."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import PRINCIPAL_TYPE_CLAIM, Principal, PrincipalType, Role, TokenVerifier
from services.gateway import keys, service
from services.gateway.models import Department, Status, System, User
from tests.factories import SystemCreateFactory, UserCreateFactory, credit_code, person
from tests.gateway.support import PASSWORD, SETTINGS, WRAP, lockout_on


@pytest.fixture
async def registered(session: AsyncSession, admin: Principal, department: Department) -> tuple[System, str]:
    return await service.create_system(session, admin, department.code, SystemCreateFactory.build(), SETTINGS)


@pytest.fixture
async def user(session: AsyncSession, admin: Principal, department: Department) -> User:
    body = UserCreateFactory.build(department=department.code, password=PASSWORD)
    return await service.create_user(session, admin, body)


@pytest.fixture
async def key(session: AsyncSession) -> ECKey:
    return (await keys.prepare_ring(session, WRAP)).current


def verifier(key: ECKey) -> TokenVerifier:
    return TokenVerifier(SETTINGS.jwt_issuer, SETTINGS.jwt_audience, keys=KeySet([key]))


def system_token(key: ECKey, system: System) -> str:
    token, _, _ = service.issue_token(
        key, SETTINGS, kind=PrincipalType.SYSTEM, sub=system.client_id, dept=system.dept_code, roles=system.roles
    )
    return token


def person_token(key: ECKey, user: User) -> str:
    token, _, _ = service.issue_token(
        key, SETTINGS, kind=PrincipalType.PERSON, sub=user.username, dept=user.dept_code, roles=user.roles
    )
    return token


async def problem_of(attempt: object) -> tuple[int, str]:
    with pytest.raises(Problem) as raised:
        await attempt  # type: ignore[misc]
    return raised.value.status, raised.value.code


# --------------------------------------------------------------------------- new tokens stop at once


async def test_a_disabled_system_gets_no_token_until_enabled(
    session: AsyncSession, admin: Principal, registered: tuple[System, str]
) -> None:
    system, secret = registered

    await service.set_system_status(session, admin, system.client_id, Status.DISABLED)

    assert await problem_of(service.authenticate_client(session, lockout_on(session), system.client_id, secret)) == (
        400,
        "oauth2-unauthorized-client",
    )
    # A wrong secret still says only "invalid client": being disabled is told to the secret's holder.
    assert await problem_of(service.authenticate_client(session, lockout_on(session), system.client_id, "x" * 43)) == (
        401,
        "oauth2-invalid-client",
    )

    await service.set_system_status(session, admin, system.client_id, Status.ACTIVE)
    assert await service.authenticate_client(session, lockout_on(session), system.client_id, secret) is system


async def test_a_disabled_person_cannot_log_in_until_enabled(
    session: AsyncSession, admin: Principal, user: User
) -> None:
    await service.set_user_status(session, admin, user.username, Status.DISABLED)

    assert await problem_of(service.authenticate_user(session, lockout_on(session), user.username, PASSWORD)) == (
        403,
        "account-disabled",
    )
    assert await problem_of(service.authenticate_user(session, lockout_on(session), user.username, "Wrong-2026")) == (
        401,
        "invalid-credentials",
    )

    await service.set_user_status(session, admin, user.username, Status.ACTIVE)
    assert await service.authenticate_user(session, lockout_on(session), user.username, PASSWORD) is user


async def test_a_disabled_department_stops_its_systems_and_people(
    session: AsyncSession, admin: Principal, department: Department, registered: tuple[System, str], user: User
) -> None:
    system, secret = registered

    await service.set_department_status(session, admin, department.code, Status.DISABLED)

    assert (await problem_of(service.authenticate_client(session, lockout_on(session), system.client_id, secret)))[
        1
    ] == ("oauth2-unauthorized-client")
    assert (await problem_of(service.authenticate_user(session, lockout_on(session), user.username, PASSWORD)))[
        1
    ] == "account-disabled"
    assert (system.status, user.status) == (Status.ACTIVE, Status.ACTIVE)  # their own status is untouched

    await service.set_department_status(session, admin, department.code, Status.ACTIVE)
    assert await service.authenticate_client(session, lockout_on(session), system.client_id, secret) is system
    assert await service.authenticate_user(session, lockout_on(session), user.username, PASSWORD) is user


# --------------------------------------------------------------------------- who may


async def test_a_departments_data_admin_disables_its_own_systems_only(
    session: AsyncSession, registered: tuple[System, str]
) -> None:
    system, _ = registered

    assert await problem_of(
        service.set_system_status(session, person(credit_code(), Role.DATA_ADMIN), system.client_id, Status.DISABLED)
    ) == (404, "not-found")
    assert await problem_of(
        service.set_system_status(session, person(system.dept_code, Role.AUDITOR), system.client_id, Status.DISABLED)
    ) == (403, "forbidden")
    assert system.status == Status.ACTIVE

    await service.set_system_status(
        session, person(system.dept_code, Role.DATA_ADMIN), system.client_id, Status.DISABLED
    )
    assert system.status == Status.DISABLED


async def test_only_a_platform_admin_disables_people_and_departments(
    session: AsyncSession, department: Department, user: User
) -> None:
    data_admin = person(department.code, Role.DATA_ADMIN)

    assert await problem_of(service.set_user_status(session, data_admin, user.username, Status.DISABLED)) == (
        403,
        "forbidden",
    )
    assert await problem_of(service.set_department_status(session, data_admin, department.code, Status.DISABLED)) == (
        403,
        "forbidden",
    )
    assert (user.status, department.status) == (Status.ACTIVE, Status.ACTIVE)


async def test_a_platform_admin_cannot_disable_themselves_or_their_department(
    session: AsyncSession, department: Department, user: User
) -> None:
    user.roles = [Role.PLATFORM_ADMIN.value]
    me = person(department.code, Role.PLATFORM_ADMIN, username=user.username)

    assert await problem_of(service.set_user_status(session, me, user.username, Status.DISABLED)) == (
        409,
        "cannot-disable-self",
    )
    assert await problem_of(service.set_department_status(session, me, department.code, Status.DISABLED)) == (
        409,
        "cannot-disable-self",
    )
    assert (user.status, department.status) == (Status.ACTIVE, Status.ACTIVE)


@pytest.mark.parametrize("what", ["department", "system", "user"])
async def test_disabling_what_does_not_exist_is_not_found(session: AsyncSession, admin: Principal, what: str) -> None:
    attempt = {
        "department": lambda: service.set_department_status(session, admin, credit_code(), Status.DISABLED),
        "system": lambda: service.set_system_status(session, admin, "sys-0000000000000000", Status.DISABLED),
        "user": lambda: service.set_user_status(session, admin, "nobody.here", Status.DISABLED),
    }[what]
    assert await problem_of(attempt()) == (404, "not-found")


def test_the_database_refuses_an_unknown_status() -> None:
    [check] = [c for c in System.__table__.constraints if c.name == "ck_systems_status"]  # type: ignore[attr-defined]
    assert "'active'" in str(check.sqltext) and "'disabled'" in str(check.sqltext)


# --------------------------------------------------------------------------- introspection (RFC 7662)


async def test_introspection_says_active_for_a_good_token_and_what_it_carries(
    session: AsyncSession, key: ECKey, registered: tuple[System, str], user: User
) -> None:
    system, _ = registered

    answer = await service.introspect(session, verifier(key), system_token(key, system))
    assert answer["active"] is True
    assert (answer["client_id"], answer["sub"], answer["scope"], answer[PRINCIPAL_TYPE_CLAIM]) == (
        system.client_id,
        system.client_id,
        "consumer",
        "system",
    )
    assert answer["exp"] > time.time() and answer["dept"] == system.dept_code  # type: ignore[operator]

    answer = await service.introspect(session, verifier(key), person_token(key, user))
    assert (answer["active"], answer["username"], answer[PRINCIPAL_TYPE_CLAIM]) == (True, user.username, "person")
    assert "client_id" not in answer


async def test_introspection_says_inactive_once_the_principal_or_department_is_disabled(
    session: AsyncSession,
    admin: Principal,
    key: ECKey,
    department: Department,
    registered: tuple[System, str],
    user: User,
) -> None:
    system, _ = registered
    tokens = [system_token(key, system), person_token(key, user)]

    await service.set_system_status(session, admin, system.client_id, Status.DISABLED)
    await service.set_user_status(session, admin, user.username, Status.DISABLED)
    assert [await service.introspect(session, verifier(key), t) for t in tokens] == [{"active": False}] * 2

    await service.set_system_status(session, admin, system.client_id, Status.ACTIVE)
    await service.set_user_status(session, admin, user.username, Status.ACTIVE)
    await service.set_department_status(session, admin, department.code, Status.DISABLED)
    assert [await service.introspect(session, verifier(key), t) for t in tokens] == [{"active": False}] * 2


async def test_introspection_says_inactive_for_expired_forged_or_unknown_tokens(
    session: AsyncSession, key: ECKey, registered: tuple[System, str]
) -> None:
    system, _ = registered
    now = int(time.time())
    claims = {
        "iss": SETTINGS.jwt_issuer,
        "aud": SETTINGS.jwt_audience,
        "sub": system.client_id,
        "client_id": system.client_id,
        PRINCIPAL_TYPE_CLAIM: "system",
        "dept": system.dept_code,
        "scope": "consumer",
        "iat": now - 100,
    }
    header = {"alg": "ES256", "kid": key.kid}
    other_key = ECKey.generate_key("P-256", parameters={"kid": key.kid}, private=True)
    tokens = {
        # expired 5 s ago: inside the verifier's 30 s clock-skew leeway, still inactive here
        "expired": jwt.encode(header, {**claims, "exp": now - 5}, key),
        "forged": jwt.encode(header, {**claims, "exp": now + 600}, other_key),
        "unknown client": jwt.encode(
            header,
            {**claims, "exp": now + 600, "sub": "sys-0000000000000000", "client_id": "sys-0000000000000000"},
            key,
        ),
        "garbage": "not-a-token",
    }
    for name, token in tokens.items():
        assert await service.introspect(session, verifier(key), token) == {"active": False}, name
    assert (await session.scalars(select(System))).all() == [system]  # nothing written

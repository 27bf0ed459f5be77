"""Lockout (锁定) after repeated failures, for people and for systems; the unlock path; the
password policy (密码策略) of new users. Real PostgreSQL, rolled back per test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import Principal, PrincipalType, Role
from services.gateway import service
from services.gateway.models import Department, SignInFailures, System, User
from services.gateway.schemas import UserCreate
from tests.factories import SystemCreateFactory, UserCreateFactory, credit_code, person
from tests.gateway.support import LOCKOUT_S, LOCKOUT_THRESHOLD, PASSWORD, SETTINGS, lockout_on


@pytest.fixture
async def user(session: AsyncSession, admin: Principal, department: Department) -> User:
    return await service.create_user(
        session, admin, UserCreateFactory.build(department=department.code, password=PASSWORD)
    )


@pytest.fixture
async def registered(session: AsyncSession, admin: Principal, department: Department) -> tuple[System, str]:
    return await service.create_system(session, admin, department.code, SystemCreateFactory.build(), SETTINGS)


async def login(session: AsyncSession, username: str, password: str) -> tuple[int, str, dict[str, str]]:
    lockout = lockout_on(session)
    try:
        await service.authenticate_user(session, lockout, username, password)
    except Problem as problem:
        answer = await lockout.settle(problem)  # as the route's audit trail does after its unit of work
        return answer.status, answer.code, answer.headers
    return 200, "ok", {}


async def token(session: AsyncSession, client_id: str, secret: str) -> tuple[int, str, dict[str, str]]:
    lockout = lockout_on(session)
    try:
        await service.authenticate_client(session, lockout, client_id, secret)
    except Problem as problem:
        answer = await lockout.settle(problem)
        return answer.status, answer.code, answer.headers
    return 200, "ok", {}


# --------------------------------------------------------------------------- people


async def test_repeated_wrong_passwords_lock_a_person_even_out_of_the_right_one(
    session: AsyncSession, user: User
) -> None:
    for _ in range(LOCKOUT_THRESHOLD - 1):
        assert (await login(session, user.username, "Wrong-2026-x"))[:2] == (401, "invalid-credentials")

    status, code, headers = await login(session, user.username, "Wrong-2026-x")
    assert (status, code) == (429, "account-locked")
    assert 0 < int(headers["Retry-After"]) <= LOCKOUT_S

    status, code, _ = await login(session, user.username, PASSWORD)
    assert (status, code) == (429, "account-locked")


async def test_a_success_before_the_threshold_forgets_the_failures(session: AsyncSession, user: User) -> None:
    for _ in range(LOCKOUT_THRESHOLD - 1):
        await login(session, user.username, "Wrong-2026-x")
    assert (await login(session, user.username, PASSWORD))[0] == 200

    for _ in range(LOCKOUT_THRESHOLD - 1):
        assert (await login(session, user.username, "Wrong-2026-x"))[1] == "invalid-credentials"
    assert (await login(session, user.username, PASSWORD))[0] == 200


async def test_an_unknown_name_is_locked_like_a_known_one(session: AsyncSession) -> None:
    # Otherwise a lockout would tell which names exist.
    answers = [await login(session, "nobody.here", "Wrong-2026-x") for _ in range(LOCKOUT_THRESHOLD + 1)]
    assert [a[1] for a in answers] == ["invalid-credentials"] * (LOCKOUT_THRESHOLD - 1) + ["account-locked"] * 2


async def test_a_lockout_ends_by_itself(session: AsyncSession, user: User) -> None:
    for _ in range(LOCKOUT_THRESHOLD):
        await login(session, user.username, "Wrong-2026-x")
    row = await session.get(SignInFailures, (PrincipalType.PERSON.value, user.username))
    assert row is not None and row.locked_until is not None
    row.locked_until = datetime.now(UTC) - timedelta(seconds=1)  # as if LOCKOUT_S had passed
    row.last_failed_at = datetime.now(UTC) - timedelta(seconds=LOCKOUT_S + 1)
    await session.flush()

    assert (await login(session, user.username, "Wrong-2026-x"))[1] == "invalid-credentials"  # a new count
    assert (await login(session, user.username, PASSWORD))[0] == 200


async def test_a_platform_admin_unlocks_a_person(session: AsyncSession, admin: Principal, user: User) -> None:
    for _ in range(LOCKOUT_THRESHOLD):
        await login(session, user.username, "Wrong-2026-x")

    with pytest.raises(Problem) as refused:
        await service.unlock_user(session, person(user.dept_code, Role.DATA_ADMIN), user.username)
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert (await login(session, user.username, PASSWORD))[1] == "account-locked"

    await service.unlock_user(session, admin, user.username)
    assert (await login(session, user.username, PASSWORD))[0] == 200


async def test_unlocking_nobody_is_not_found(session: AsyncSession, admin: Principal) -> None:
    with pytest.raises(Problem) as raised:
        await service.unlock_user(session, admin, "nobody.here")
    assert (raised.value.status, raised.value.code) == (404, "not-found")


async def test_right_passwords_in_a_row_count_nothing(session: AsyncSession, user: User) -> None:
    for _ in range(2 * LOCKOUT_THRESHOLD):
        assert (await login(session, user.username, PASSWORD))[0] == 200
    assert await session.scalar(select(func.count()).select_from(SignInFailures)) == 0


async def test_failures_are_counted_across_replicas_in_one_row(session: AsyncSession, user: User) -> None:
    # Each attempt uses a new Lockout (as another replica would): the count lives in PostgreSQL.
    for _ in range(LOCKOUT_THRESHOLD - 1):
        await login(session, user.username, "Wrong-2026-x")
    rows = (await session.scalars(select(SignInFailures))).all()
    assert [(r.kind, r.name, r.failures, r.locked_until) for r in rows] == [
        ("person", user.username, LOCKOUT_THRESHOLD - 1, None)
    ]


# --------------------------------------------------------------------------- systems


async def test_repeated_wrong_secrets_lock_a_client(session: AsyncSession, registered: tuple[System, str]) -> None:
    system, secret = registered
    for _ in range(LOCKOUT_THRESHOLD - 1):
        assert (await token(session, system.client_id, "x" * 43))[:2] == (401, "oauth2-invalid-client")

    status, code, headers = await token(session, system.client_id, "x" * 43)
    assert (status, code) == (429, "oauth2-client-locked")
    assert int(headers["Retry-After"]) > 0
    assert (await token(session, system.client_id, secret))[1] == "oauth2-client-locked"


async def test_a_locked_clients_body_says_invalid_client(session: AsyncSession, registered: tuple[System, str]) -> None:
    system, _ = registered
    for _ in range(LOCKOUT_THRESHOLD - 1):
        await token(session, system.client_id, "x" * 43)
    lockout = lockout_on(session)
    with pytest.raises(Problem) as raised:
        await service.authenticate_client(session, lockout, system.client_id, "x" * 43)
    locked = await lockout.settle(raised.value)
    assert locked.code == "oauth2-client-locked"
    assert locked.body()["error"] == "invalid_client"  # RFC 6749 has no "locked" error


async def test_the_departments_data_admin_unlocks_its_system(
    session: AsyncSession, registered: tuple[System, str]
) -> None:
    system, secret = registered
    for _ in range(LOCKOUT_THRESHOLD):
        await token(session, system.client_id, "x" * 43)

    with pytest.raises(Problem) as refused:
        await service.unlock_system(session, person(credit_code(), Role.DATA_ADMIN), system.client_id)
    assert refused.value.status == 404

    await service.unlock_system(session, person(system.dept_code, Role.DATA_ADMIN), system.client_id)
    assert (await token(session, system.client_id, secret))[0] == 200
    assert await session.scalar(select(func.count()).select_from(SignInFailures)) == 0


# --------------------------------------------------------------------------- password policy


@pytest.mark.parametrize(
    ("password", "says"),
    [
        pytest.param("Tb-2026", "7 characters", id="too short"),
        pytest.param("tongbanpassword", "only lower-case letters", id="one kind"),
        pytest.param("tongban-password", "only lower-case letters, symbols", id="two kinds"),
        pytest.param("Zhang.Wei-2026", "contains the username", id="contains the username"),
    ],
)
def test_a_weak_password_is_refused_with_the_rule(password: str, says: str) -> None:
    # What the API answers (422 validation, nothing written): tests/e2e/test_identity_lifecycle.py.
    with pytest.raises(ValidationError) as raised:
        UserCreate(username="zhang.wei", password=password, department=credit_code(), roles=["auditor"])

    message = str(raised.value)
    assert says in message and "at least 12 characters" in message and "密码至少 12 个字符" in message


@pytest.mark.parametrize("password", ["Tongban-2026", "tongban-2026-x", "TONGBAN2026ab", "通办-Tongban-2026"])
def test_a_strong_enough_password_is_accepted(password: str) -> None:
    assert UserCreate(username="zhang.wei", password=password, department=credit_code(), roles=["auditor"])

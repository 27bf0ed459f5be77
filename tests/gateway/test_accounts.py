"""What a platform administrator sees of accounts and systems (the console's administration pages
list them): people with their status and lockout, re-roling a person, systems by department.
Real PostgreSQL, rolled back per test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import Principal, Role
from services.gateway import service
from services.gateway.models import Department, SignInFailures, Status, System, User
from tests.factories import DepartmentCreateFactory, SystemCreateFactory, UserCreateFactory, person
from tests.gateway.support import SETTINGS


@pytest.fixture
async def user(session: AsyncSession, admin: Principal, department: Department) -> User:
    return await service.create_user(session, admin, UserCreateFactory.build(department=department.code))


async def refusal(attempt: object) -> tuple[int, str]:
    with pytest.raises(Problem) as raised:
        await attempt  # type: ignore[misc]
    return raised.value.status, raised.value.code


async def test_the_accounts_list_says_who_is_disabled_and_who_is_locked_out(
    session: AsyncSession, admin: Principal, department: Department, user: User
) -> None:
    other = await service.create_user(session, admin, UserCreateFactory.build(department=department.code))
    await service.set_user_status(session, admin, other.username, Status.DISABLED)
    until = datetime.now(UTC) + timedelta(minutes=5)
    session.add(SignInFailures(kind="person", name=user.username, failures=0, last_failed_at=until, locked_until=until))
    # A lockout that has ended is not one.
    session.add(
        SignInFailures(
            kind="person", name=other.username, failures=0, last_failed_at=until, locked_until=until - timedelta(days=1)
        )
    )
    await session.flush()

    rows, cursor = await service.list_users(session, admin, 100, None, department.code)
    assert cursor is None
    seen = {u.username: (u.status, locked) for u, locked in rows}
    assert seen == {user.username: (Status.ACTIVE, until), other.username: (Status.DISABLED, None)}
    assert (await service.get_user(session, admin, user.username))[1] == until

    # One page at a time, in username order.
    first, cursor = await service.list_users(session, admin, 1, None, department.code)
    rest, end = await service.list_users(session, admin, 1, cursor, department.code)
    assert [first[0][0].username, rest[0][0].username] == sorted(seen) and end is None


async def test_only_a_platform_admin_lists_or_reads_accounts(
    session: AsyncSession, department: Department, user: User
) -> None:
    data_admin = person(department.code, Role.DATA_ADMIN)
    assert await refusal(service.list_users(session, data_admin, 10, None, None)) == (403, "forbidden")
    assert await refusal(service.get_user(session, data_admin, user.username)) == (403, "forbidden")


async def test_a_platform_admin_re_roles_a_person(session: AsyncSession, admin: Principal, user: User) -> None:
    changed = await service.set_user_roles(session, admin, user.username, ["auditor", "approver", "auditor"])
    assert changed.roles == ["approver", "auditor"]
    await session.refresh(user)
    assert user.roles == ["approver", "auditor"]

    assert await refusal(service.set_user_roles(session, admin, "nobody.here", ["auditor"])) == (404, "not-found")
    approver = person(user.dept_code, Role.APPROVER)
    assert await refusal(service.set_user_roles(session, approver, user.username, ["platform_admin"])) == (
        403,
        "forbidden",
    )
    await session.refresh(user)
    assert user.roles == ["approver", "auditor"]


async def test_a_platform_admin_keeps_their_own_platform_admin_role(
    session: AsyncSession, admin: Principal, department: Department
) -> None:
    body = UserCreateFactory.build(department=department.code, roles=["platform_admin"])
    me = await service.create_user(session, admin, body)
    myself = person(department.code, Role.PLATFORM_ADMIN, username=me.username)
    assert await refusal(service.set_user_roles(session, myself, me.username, ["auditor"])) == (403, "forbidden")
    assert (await service.set_user_roles(session, myself, me.username, ["auditor", "platform_admin"])).roles == [
        "auditor",
        "platform_admin",
    ]


async def test_systems_are_listed_to_a_platform_admin_and_to_their_own_department_only(
    session: AsyncSession, admin: Principal, department: Department
) -> None:
    other = await service.create_department(session, admin, DepartmentCreateFactory.build())
    mine, _ = await service.create_system(session, admin, department.code, SystemCreateFactory.build(), SETTINGS)
    theirs, _ = await service.create_system(session, admin, other.code, SystemCreateFactory.build(), SETTINGS)

    def ids(rows: list[System]) -> set[str]:
        return {s.client_id for s in rows}

    everyone, _ = await service.list_systems(session, admin, 500, None, None)
    assert {mine.client_id, theirs.client_id} <= ids(everyone)
    assert ids((await service.list_systems(session, admin, 500, None, other.code))[0]) == {theirs.client_id}
    data_admin = person(department.code, Role.DATA_ADMIN)
    assert ids((await service.list_systems(session, data_admin, 500, None, None))[0]) == {mine.client_id}
    # Asking for another department's gives nothing, not theirs.
    assert (await service.list_systems(session, data_admin, 500, None, other.code))[0] == []

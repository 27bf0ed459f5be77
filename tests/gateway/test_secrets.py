"""Client secret rotation (密钥轮换): a second secret beside the first, at most two active, the
older retired explicitly; each shown once. Real PostgreSQL, rolled back per test."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.errors import Problem
from services.common.security import Principal, Role
from services.gateway import service
from services.gateway.models import ClientSecret, Department, System
from tests.factories import SystemCreateFactory, credit_code, person
from tests.gateway.support import SETTINGS, lockout_on


@pytest.fixture
def data_admin(department: Department) -> Principal:
    return person(department.code, Role.DATA_ADMIN)


@pytest.fixture
async def registered(session: AsyncSession, department: Department, data_admin: Principal) -> tuple[System, str]:
    return await service.create_system(session, data_admin, department.code, SystemCreateFactory.build(), SETTINGS)


async def secret_count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(ClientSecret)) or 0)


async def authenticates(session: AsyncSession, client_id: str, secret: str) -> bool:
    try:
        await service.authenticate_client(session, lockout_on(session), client_id, secret)
    except Problem as problem:
        if problem.code != "oauth2-invalid-client":
            raise
        return False
    return True


async def test_a_rotation_adds_a_second_secret_and_both_work_until_the_old_is_retired(
    session: AsyncSession, data_admin: Principal, registered: tuple[System, str]
) -> None:
    system, old = registered
    [old_row] = await service.client_secrets(session, system.client_id)

    new_row, new = await service.rotate_secret(session, data_admin, system.client_id)

    assert new != old and new not in new_row.secret_hash
    assert await authenticates(session, system.client_id, old)
    assert await authenticates(session, system.client_id, new)
    assert new_row.last_used_at is not None and old_row.last_used_at is not None  # shows both are in use

    await service.retire_secret(session, data_admin, system.client_id, old_row.id)

    assert not await authenticates(session, system.client_id, old)
    assert await authenticates(session, system.client_id, new)
    assert [s.id for s in await service.client_secrets(session, system.client_id)] == [new_row.id]


async def test_a_third_secret_waits_until_one_is_retired(
    session: AsyncSession, data_admin: Principal, registered: tuple[System, str]
) -> None:
    system, _ = registered
    await service.rotate_secret(session, data_admin, system.client_id)

    with pytest.raises(Problem) as raised:
        await service.rotate_secret(session, data_admin, system.client_id)

    assert (raised.value.status, raised.value.code) == (409, "too-many-secrets")
    assert await secret_count(session) == 2


async def test_the_only_secret_is_not_retired(
    session: AsyncSession, data_admin: Principal, registered: tuple[System, str]
) -> None:
    system, secret = registered
    [only] = await service.client_secrets(session, system.client_id)

    with pytest.raises(Problem) as raised:
        await service.retire_secret(session, data_admin, system.client_id, only.id)

    assert (raised.value.status, raised.value.code) == (409, "last-secret")
    assert await secret_count(session) == 1
    assert await authenticates(session, system.client_id, secret)


async def test_an_unknown_secret_id_is_not_found(
    session: AsyncSession, data_admin: Principal, registered: tuple[System, str]
) -> None:
    system, _ = registered
    await service.rotate_secret(session, data_admin, system.client_id)

    with pytest.raises(Problem) as raised:
        await service.retire_secret(session, data_admin, system.client_id, "0123456789abcdef")

    assert (raised.value.status, raised.value.code) == (404, "not-found")
    assert await secret_count(session) == 2


@pytest.mark.parametrize(
    ("who", "status", "code"),
    [
        pytest.param(lambda dept: person(credit_code(), Role.DATA_ADMIN), 404, "not-found", id="other department"),
        pytest.param(lambda dept: person(dept, Role.APPROVER), 403, "forbidden", id="same department, not admin"),
    ],
)
async def test_only_the_departments_data_admin_or_a_platform_admin_rotates(
    session: AsyncSession, registered: tuple[System, str], who: Callable[[str], Principal], status: int, code: str
) -> None:
    system, _ = registered
    principal = who(system.dept_code)
    [only] = await service.client_secrets(session, system.client_id)

    for attempt in (
        service.rotate_secret(session, principal, system.client_id),
        service.retire_secret(session, principal, system.client_id, only.id),
    ):
        with pytest.raises(Problem) as raised:
            await attempt
        assert (raised.value.status, raised.value.code) == (status, code)
    assert await secret_count(session) == 1


async def test_a_platform_admin_rotates_any_departments_secret(
    session: AsyncSession, registered: tuple[System, str]
) -> None:
    system, _ = registered
    platform_admin = person(credit_code("110101"), Role.PLATFORM_ADMIN)

    _, secret = await service.rotate_secret(session, platform_admin, system.client_id)

    assert await authenticates(session, system.client_id, secret)

"""Fixtures of the gateway's service tier: the platform administrator and a department of theirs."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.security import Principal, Role
from services.gateway import service
from services.gateway.models import Department
from tests.factories import DepartmentCreateFactory, credit_code, person


@pytest.fixture
def admin() -> Principal:
    """The platform operator's administrator (platform_admin)."""
    return person(credit_code("110101"), Role.PLATFORM_ADMIN, username="admin")


@pytest.fixture
async def department(session: AsyncSession, admin: Principal) -> Department:
    return await service.create_department(session, admin, DepartmentCreateFactory.build())

"""Fixtures of the gateway's service tier: the platform administrator and a department of theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.security import Principal, Role
from services.gateway import service
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.gateway.models import Department
from tests.factories import DepartmentCreateFactory, credit_code, person
from tests.gateway.support import (
    API_BURST,
    KEK,
    PASSWORD,
    SOURCE_BURST,
    TOKEN_BURST,
    TOKEN_RATE,
    Replicas,
)
from tests.stack import asyncpg_dsn, create_database, drop_database, free_port, infra_env


@pytest.fixture
def admin() -> Principal:
    """The platform operator's administrator (platform_admin)."""
    return person(credit_code("110101"), Role.PLATFORM_ADMIN, username="admin")


@pytest.fixture
async def department(session: AsyncSession, admin: Principal) -> Department:
    return await service.create_department(session, admin, DepartmentCreateFactory.build())


@pytest.fixture(scope="module")
async def replicas() -> AsyncIterator[Replicas]:
    """Two gateway apps (as two replicas) on one fresh database, each with its lifespan; tight limits."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    settings = GatewaySettings(
        database_url=url,
        bus="memory",
        bootstrap_admin_password=PASSWORD,
        key_encryption_key=KEK,
        # Nothing listens there: a request the limiter lets through ends as 502, one it stops as 429.
        registry_url=f"http://127.0.0.1:{free_port()}",
        exchange_url=f"http://127.0.0.1:{free_port()}",
        audit_url=f"http://127.0.0.1:{free_port()}",
        source_rate_limit_burst=SOURCE_BURST,
        source_rate_limit_per_s=0.001,
        token_rate_limit_burst=TOKEN_BURST,
        token_rate_limit_per_s=TOKEN_RATE,
        login_rate_limit_burst=TOKEN_BURST,
        login_rate_limit_per_s=2.0,
        rate_limit_burst=API_BURST,
        rate_limit_per_s=0.001,
    )
    apps = [create_app(settings), create_app(settings)]
    try:
        async with apps[0].router.lifespan_context(apps[0]), apps[1].router.lifespan_context(apps[1]):
            yield Replicas(settings, asyncpg_dsn(url)[0], apps)
    finally:
        await drop_database(url)

"""The service tier's own promises: a migrated database per worker, and a test's rows are its own."""

from __future__ import annotations

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import column, func, select, table, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.gateway.models import Department
from tests.factories import DepartmentCreateFactory
from tests.stack import ROOT, SERVICES
from tests.tier import worker_id

pytestmark = pytest.mark.service


async def test_every_service_schema_is_migrated_to_its_head(session: AsyncSession) -> None:
    database = await session.scalar(text("SELECT current_database()"))
    assert database is not None and database.endswith(f"_{worker_id()}")
    for schema in SERVICES:
        head = ScriptDirectory(str(ROOT / "services" / schema / "migrations")).get_current_head()
        versions = table("alembic_version", column("version_num"), schema=schema)
        assert await session.scalar(select(versions.c.version_num)) == head, schema


@pytest.mark.parametrize("attempt", [1, 2])
async def test_rows_of_other_tests_are_never_seen(
    session: AsyncSession, tier_engine: AsyncEngine, attempt: int
) -> None:
    # Run twice: each attempt starts empty although the other one committed a department.
    assert await session.scalar(select(func.count()).select_from(Department)) == 0
    session.add(Department(**DepartmentCreateFactory.build().model_dump()))
    await session.commit()  # what code under test may do: it releases a savepoint only
    assert await session.scalar(select(func.count()).select_from(Department)) == 1
    # Another connection does not see it: the test's outer transaction never commits.
    async with tier_engine.connect() as other:
        assert await other.scalar(select(func.count()).select_from(Department)) == 0

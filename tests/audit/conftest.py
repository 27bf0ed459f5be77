"""The audit service's own tier: its store and API against the real PostgreSQL (and Kafka where
messages travel), in a database of this module's own, migrated by Alembic and dropped at the end."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.audit.app import MIGRATIONS
from services.common.db import create_engine, migrate, session_factory
from tests.stack import create_database, drop_database, infra_env


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """A fresh database for the module (the audit schema not yet created)."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def empty_database() -> AsyncIterator[str]:
    """A database of the test's own, nothing created in it (for migration tests)."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    try:
        await migrate(engine, "audit", MIGRATIONS)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)

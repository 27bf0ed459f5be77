"""Fixtures of the exchange's service tier: a database of the test's own (some tests make it
refuse connections, or commit through two engines as two replicas), the exchange schema migrated,
居民户籍信息 of the provider published. The shared helpers are in ``support.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import create_engine, migrate
from services.exchange.app import MIGRATIONS
from tests.exchange.support import publish
from tests.stack import create_database, drop_database, infra_env


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """The URL of a database of its own, the exchange schema migrated, one published resource."""
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"])
    engine = create_engine(url, pool_size=2)
    try:
        await migrate(engine, "exchange", MIGRATIONS)
        await publish(engine)
        await engine.dispose()
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    """An engine on :func:`database` (one exchange replica's)."""
    engine = create_engine(database, pool_size=8)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def engines(database: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on :func:`database`: two exchange replicas."""
    first, second = create_engine(database, pool_size=8), create_engine(database, pool_size=8)
    try:
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()

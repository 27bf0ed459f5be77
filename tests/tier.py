"""Test tiers and the service tier's database (a pytest plugin, loaded by ``tests/conftest.py``).

Tiers, by folder (marker applied automatically; select with ``-m``, e.g. ``-m "not e2e"``):

* ``tests/unit`` — ``unit``: pure functions, no I/O;
* ``tests/integration`` — ``integration``: one component against real PostgreSQL / Kafka;
* ``tests/<service>`` — ``service``: a service's rules (its ``service.py``) against real PostgreSQL,
  each test in a transaction rolled back at its end (fixture :func:`session`);
* ``tests/e2e`` — ``e2e``: every service as its own process, over HTTP (longer timeout, and one
  xdist group so that the session's stacks start once under ``--dist loadgroup``).

The service tier uses one database per pytest-xdist worker, created at session start on the
server of ``TONGBAN_DATABASE_URL``, migrated by each service's own Alembic history into its own
schema (as in embedded mode), and dropped at session end.

``make test`` runs the suite in one process: with pytest-xdist (``-n 2 --dist loadgroup``) it was
slower on a 2-core machine, where the e2e stacks already use every core, and the tests that crash
shared infrastructure (e2e kills PostgreSQL, integration kills the broker) break whatever runs
beside them on another worker. ``-n 2`` is safe for ``-m "unit or service"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.db import create_engine, migrate
from tests.stack import ROOT, SERVICES, create_database, drop_database, drop_test_databases, infra_env

TESTS = Path(__file__).resolve().parent
TIER_OF_FOLDER = {"unit": "unit", "integration": "integration", "e2e": "e2e", **dict.fromkeys(SERVICES, "service")}
TIERS = frozenset(TIER_OF_FOLDER.values())
E2E_TIMEOUT_S = 600  # a stack takes up to a minute or two to start on a busy 2-core machine
E2E_GROUP = "e2e"


def worker_id() -> str:
    """This process's pytest-xdist worker (``gw0``, ``gw1``…), or ``master`` when not under xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "master")


# --------------------------------------------------------------------------- markers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path).resolve()
        folder = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else ""
        tier = TIER_OF_FOLDER.get(folder)
        if tier is not None:
            item.add_marker(tier)
        # Every test belongs to exactly one tier, so that -m selects the whole suite between them.
        marked = [name for name in TIERS if item.get_closest_marker(name)]
        if len(marked) != 1:
            raise pytest.UsageError(
                f"{item.nodeid}: in {len(marked)} tiers {marked}; put it under tests/<tier or service>/ "
                "(tests/tier.py: TIER_OF_FOLDER) or mark it with one tier"
            )
        if marked == ["e2e"]:
            item.add_marker(pytest.mark.xdist_group(E2E_GROUP))
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(E2E_TIMEOUT_S))


# --------------------------------------------------------------------------- databases


def pytest_sessionstart(session: pytest.Session) -> None:
    # Once per run (the xdist controller, or the only process): databases a killed run left behind.
    if "PYTEST_XDIST_WORKER" not in os.environ:
        sweep(abandoned=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # After every fixture (and so every stack process) has stopped: whatever this process created
    # and did not drop itself, e.g. a test's own database.
    sweep(abandoned=False)


def sweep(*, abandoned: bool) -> None:
    url = os.environ.get("TONGBAN_DATABASE_URL")
    if url is None:
        return  # no server configured: the tests that need one fail on their own (InfraMissing)
    with contextlib.suppress(OSError):  # the server is not running: nothing of ours is on it now
        asyncio.run(drop_test_databases(url, abandoned=abandoned))


@pytest.fixture(scope="session")
async def tier_engine() -> AsyncIterator[AsyncEngine]:
    """An engine on this worker's database, every service's schema migrated to its head.

    Tests should use :func:`session`; what is committed through this engine directly stays for
    the rest of the session, visible to the tests that run after (clean it up yourself).
    """
    url = await create_database(infra_env()["TONGBAN_DATABASE_URL"], tag=worker_id())
    engine = create_engine(url, pool_size=4)
    try:
        for name in SERVICES:
            await migrate(engine, name, ROOT / "services" / name / "migrations")
        yield engine
    finally:
        await engine.dispose()
        await drop_database(url)


@pytest.fixture
async def session(tier_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test: no test sees another's
    rows. Code under test may ``flush``, ``commit`` or ``rollback``: those act on a savepoint."""
    async with tier_engine.connect() as connection:
        outer = await connection.begin()
        sessions = async_sessionmaker(bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint")
        try:
            async with sessions() as session:
                yield session
        finally:
            await outer.rollback()

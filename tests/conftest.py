"""Shared fixtures: real PostgreSQL and Kafka from `make infra-up`; never mocked, never skipped.

The tiers (markers by folder) and the service tier's per-worker database and rolled-back
``session`` live in ``tests/tier.py``; the e2e stacks are here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from services.demo import DemoCredentials
from tests.integration.helpers import written_env
from tests.stack import (
    DistributedStack,
    EmbeddedStack,
    asyncpg_dsn,
    create_database,
    drop_database,
    free_port,
    infra,
    infra_env,
)

pytest_plugins = ("tests.tier",)


@pytest.fixture(scope="session")
async def distributed() -> AsyncIterator[tuple[DistributedStack, DemoCredentials]]:
    stack = DistributedStack(database_url=await create_database(infra_env()["TONGBAN_DATABASE_URL"]))
    try:
        yield stack, await stack.start()
    finally:
        stack.stop_all()  # first: the database is dropped under no one's feet
        await drop_database(stack.database_url)


@pytest.fixture
async def second_gateway(distributed: tuple[DistributedStack, DemoCredentials]) -> AsyncIterator[str]:
    """Another gateway process on the distributed stack's database, as a second replica behind a
    load balancer; its base URL. Stopped after the test."""
    stack = distributed[0]
    stack.ports["gateway-2"] = free_port()
    stack.spawn("gateway-2", "services.gateway", {"TONGBAN_GATEWAY_PORT": str(stack.ports["gateway-2"])})
    try:
        await stack.wait_ready("gateway-2")
        yield f"http://127.0.0.1:{stack.ports['gateway-2']}"
    finally:
        stack.stop("gateway-2")
        del stack.ports["gateway-2"]


@pytest.fixture(scope="session")
async def embedded() -> AsyncIterator[tuple[EmbeddedStack, DemoCredentials]]:
    stack = EmbeddedStack(database_url=await create_database(infra_env()["TONGBAN_DATABASE_URL"]))
    try:
        yield stack, await stack.start()
    finally:
        stack.stop_all()  # first: the database is dropped under no one's feet
        await drop_database(stack.database_url)


@pytest.fixture
async def db(distributed: tuple[DistributedStack, DemoCredentials]) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the distributed stack's database, to check what was (not) written."""
    conn = await asyncpg.connect(asyncpg_dsn(distributed[0].database_url)[0])
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[str]:
    """The three-node Kafka cluster of ``infra.py cluster-up`` (RF 3, min ISR 2), started once for
    the tests that need it; its bootstrap servers. A test that kills a node starts it again."""
    infra("cluster-up")
    try:
        yield written_env()["TONGBAN_KAFKA_CLUSTER_BOOTSTRAP"]
    finally:
        infra("cluster-down")

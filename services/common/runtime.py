"""The clients a service owns, created and closed by its lifespan (no import-time connections)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.bus import Bus, KafkaBus, MemoryBus
from services.common.db import create_engine, migrate, ping, session_factory
from services.common.security import Principal, TokenVerifier, bearer_token
from services.common.settings import CommonSettings

log = logging.getLogger("tongban.runtime")


@dataclass
class Runtime:
    settings: CommonSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    verifier: TokenVerifier


def make_bus(settings: CommonSettings, client_id: str, registry: CollectorRegistry | None = None) -> Bus:
    """The bus of the settings, its metrics in ``registry`` (the service's, ``app.state.metrics``)."""
    dlq = settings.topic("exchange.dlq")
    if settings.bus == "memory":
        return MemoryBus(dlq, registry=registry)
    return KafkaBus(settings.kafka_bootstrap, client_id, dlq, registry=registry)


@asynccontextmanager
async def service_runtime(
    settings: CommonSettings,
    *,
    schema: str,
    migrations: Path,
    bus: Bus | None = None,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Runtime]:
    """Engine (migrated to head), session factory, bus (not yet started) and token verifier.

    Pass ``bus`` to share one in-process bus between the services of the embedded mode; its
    owner exports its metrics once. A bus made here exports them into ``registry``.
    """
    engine = create_engine(settings.database_url, settings.database_pool_size)
    verifier = TokenVerifier(
        settings.jwt_issuer, settings.jwt_audience, settings.gateway_url + "/.well-known/jwks.json"
    )
    try:
        await migrate(engine, schema, migrations)
        yield Runtime(
            settings,
            engine,
            session_factory(engine),
            bus or make_bus(settings, f"tongban-{schema}", registry),
            verifier,
        )
    finally:
        await verifier.close()
        await engine.dispose()


def readiness_checks(rt: Runtime) -> list[object]:
    async def database() -> None:
        await ping(rt.engine)

    async def broker() -> None:
        await rt.bus.ping()

    return [database, broker]


async def current_principal(request: Request) -> Principal:
    verifier: TokenVerifier = request.app.state.runtime.verifier
    return await verifier.verify(bearer_token(request.headers.get("authorization")))


def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

"""The clients a service owns, created and closed by its lifespan (no import-time connections)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.common.bus import Bus, KafkaBus, MemoryBus, kafka_ssl_context
from services.common.db import create_engine, migrate, ping, session_factory
from services.common.outbox import Outbox
from services.common.security import (
    CLIENT_CERT_THUMBPRINT_HEADER,
    Principal,
    TokenVerifier,
    bearer_token,
    require_certificate,
)
from services.common.settings import CommonSettings
from services.common.uow import UnitOfWork

log = logging.getLogger("tongban.runtime")


@dataclass
class Runtime:
    settings: CommonSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    verifier: TokenVerifier
    outbox: Outbox | None  # services that emit events; its relay is started by the lifespan


def make_bus(settings: CommonSettings, client_id: str, registry: CollectorRegistry | None = None) -> Bus:
    """The bus of the settings, its metrics in ``registry`` (the service's, ``app.state.metrics``)."""
    dlq = settings.topic("exchange.dlq")
    if settings.bus == "memory":
        return MemoryBus(dlq, registry=registry)
    tls = None
    if settings.kafka_security_protocol == "SSL" and settings.kafka_ssl_cafile is not None:
        tls = kafka_ssl_context(settings.kafka_ssl_cafile, settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return KafkaBus(
        settings.kafka_bootstrap,
        client_id,
        dlq,
        registry=registry,
        ssl_context=tls,
        stall_after_s=settings.kafka_stall_after_s,
    )


@asynccontextmanager
async def service_runtime(
    settings: CommonSettings,
    *,
    schema: str,
    migrations: Path,
    bus: Bus | None = None,
    outbox_model: type[Any] | None = None,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Runtime]:
    """Engine (migrated to head), session factory, bus (not yet started), token verifier, and the
    outbox over ``outbox_model`` (the service's outbox table) if the service emits events.

    Pass ``bus`` to share one in-process bus between the services of the embedded mode; its
    owner exports its metrics once. A bus and outbox made here export theirs into ``registry``
    (the service's own, ``app.state.metrics``).
    """
    engine = create_engine(settings.database_url, settings.database_pool_size)
    verifier = TokenVerifier(
        settings.jwt_issuer, settings.jwt_audience, settings.gateway_url + "/.well-known/jwks.json"
    )
    try:
        await migrate(engine, schema, migrations)
        sessions = session_factory(engine)
        the_bus = bus or make_bus(settings, f"tongban-{schema}", registry)
        outbox = Outbox(outbox_model, sessions, the_bus, registry=registry) if outbox_model is not None else None
        yield Runtime(settings, engine, sessions, the_bus, verifier, outbox)
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
    principal = await verifier.verify(bearer_token(request.headers.get("authorization")))
    require_certificate(principal, request.headers.get(CLIENT_CERT_THUMBPRINT_HEADER))
    return principal


def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    """The request's unit of work (:mod:`services.common.uow`): commits when the route returns,
    rolls back when it raises, then publishes what it emitted — all before the response is sent."""
    rt: Runtime = request.app.state.runtime
    if rt.outbox is not None:
        async with rt.outbox.unit_of_work() as uow:
            yield uow
        return
    async with rt.sessions.begin() as session:
        uow = UnitOfWork(session, accepts_events=False)
        try:
            yield uow
        finally:
            uow.open = False


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
# scope="function": the unit ends when the route function does, before the response is sent, so
# a client is never told "done" about a change that then fails to commit.
UnitOfWorkDep = Annotated[UnitOfWork, Depends(unit_of_work, scope="function")]

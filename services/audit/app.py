"""Audit application factory; the lifespan owns the database, the bus and the event consumer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from services.audit.api import router
from services.audit.config import AuditSettings
from services.audit.messaging import on_audit_events
from services.common.bus import Bus, Subscription
from services.common.http import create_service_app
from services.common.runtime import readiness_checks, service_runtime

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: AuditSettings | None = None, bus: Bus | None = None) -> FastAPI:
    settings = settings or AuditSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with service_runtime(settings, schema="audit", migrations=MIGRATIONS, bus=bus) as rt:
            rt.bus.subscribe(
                Subscription(
                    [settings.topic("audit.events")],
                    on_audit_events(rt.sessions),
                    group=settings.topic("audit"),
                    fetch_min_bytes=64 * 1024,  # one chain append per batch: fewer, larger batches
                    fetch_max_wait_ms=250,
                )
            )
            await rt.bus.start()
            app.state.runtime = rt
            app.state.readiness = readiness_checks(rt)
            try:
                yield
            finally:
                await rt.bus.stop()

    app = create_service_app(
        service="audit",
        title="Tongban audit",
        version="0.1.0",
        description="Every access, hash-chained; searched by auditors; subjects matched by keyed hash.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )
    app.include_router(router)
    return app

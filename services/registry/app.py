"""Registry application factory; the lifespan owns the database, the bus and the outbox relay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.common.bus import Bus
from services.common.calendar import WorkingCalendar
from services.common.http import create_service_app
from services.common.runtime import readiness_checks, service_runtime
from services.registry.api import router
from services.registry.api.common import topics
from services.registry.config import RegistrySettings
from services.registry.identity import SystemDirectory
from services.registry.models import Outbox as OutboxModel
from services.registry.transfer.jobs import ImportWorker

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: RegistrySettings | None = None, bus: Bus | None = None) -> FastAPI:
    settings = settings or RegistrySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            service_runtime(
                settings,
                schema="registry",
                migrations=MIGRATIONS,
                bus=bus,
                registry=app.state.metrics,
                outbox_model=OutboxModel,
            ) as rt,
            httpx.AsyncClient(timeout=5.0) as gateway,
        ):
            outbox = rt.outbox
            assert outbox is not None
            await rt.bus.start([settings.topic("registry.events")])
            await outbox.start()
            app.state.runtime = rt
            app.state.systems = SystemDirectory(settings.gateway_url, gateway)
            app.state.readiness = readiness_checks(rt)
            # Import jobs: the events of 10,000 entries need not reach the broker before the job
            # is done; they are committed with it and the relay publishes them.
            imports = ImportWorker(rt.sessions, lambda: outbox.unit_of_work(wait_for_publish=False), topics(rt))
            app.state.imports = imports
            await imports.start()
            try:
                yield
            finally:
                await imports.stop()
                await outbox.stop()
                await rt.bus.stop()

    app = create_service_app(
        service="registry",
        title="Tongban registry",
        version="0.1.0",
        description="The shared-data catalogue (资源目录), applications and grants.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    # The working-day calendar is data read once; its fallback counter lives in the app's registry.
    app.state.calendar = WorkingCalendar.load(app.state.metrics, "registry")
    app.include_router(router)
    return app

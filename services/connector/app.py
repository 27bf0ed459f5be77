"""Connector application factory; the lifespan owns the database, the bus and the request consumer."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request

from services.common import keywrap
from services.common.bus import Bus, Subscription
from services.common.http import create_service_app
from services.common.identifiers import validate_credit_code
from services.common.runtime import readiness_checks, service_runtime
from services.connector import service
from services.connector.backend_config import DEMO_ONLY, load_backends
from services.connector.backends import open_backends
from services.connector.config import ConnectorSettings
from services.connector.feeds import load_feeds, running_feeds
from services.connector.messaging import on_requests, purge_old_replies

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: ConnectorSettings | None = None, bus: Bus | None = None) -> FastAPI:
    settings = settings or ConnectorSettings()
    dept = validate_credit_code(settings.dept_code)
    wrap = keywrap.required(settings.key_encryption_key, "connector")
    # Read before anything starts: a wrong file stops the connector (BackendConfigError) instead
    # of answering every query with an error.
    config = load_backends(settings.backends_file, os.environ) if settings.backends_file else DEMO_ONLY
    feeds = load_feeds(settings.backends_file, config) if settings.backends_file else ()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            service_runtime(
                settings, schema="connector", migrations=MIGRATIONS, bus=bus, registry=app.state.metrics
            ) as rt,
            open_backends(config, app.state.metrics) as backends_in_use,
        ):
            async with rt.sessions.begin() as session:
                await service.seed_population(session, settings.demo_population)
                key_id, key = await service.signing_key(session, wrap)
                app.state.jwks = await service.public_jwks(session, wrap)
            responder = service.Responder(
                dept,
                key_id,
                key,
                service.LookupMetrics(app.state.metrics),
                log_lookups=settings.log_lookups,
                backends=backends_in_use,
            )
            requests = settings.topic(f"exchange.requests.{dept}")
            replies = settings.topic("exchange.replies")
            # Only this department's topic: a connector never sees another provider's requests.
            rt.bus.subscribe(
                Subscription(
                    [requests],
                    on_requests(responder, rt.engine, rt.bus, replies),
                    group=f"{settings.topic_prefix}connector.{dept}",
                    personal_data=True,  # the subject's identifier in clear: dead letters withheld
                )
            )
            await rt.bus.start([replies, *(settings.topic(f.topic) for f in feeds)])
            purger = asyncio.create_task(
                purge_old_replies(rt.engine, settings.reply_retention_s), name="connector:purge-replies"
            )
            app.state.runtime = rt

            async def backends() -> None:
                await backends_in_use.check()

            app.state.readiness = [*readiness_checks(rt), backends]
            try:
                async with running_feeds(
                    feeds, backends_in_use, rt.engine, rt.bus, settings.topic, dept, app.state.metrics
                ):
                    yield
            finally:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
                await rt.bus.stop()

    app = create_service_app(
        service="connector",
        title="Tongban connector",
        version="0.1.0",
        description=f"前置机 of department {dept}: answers its exchange requests.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )

    @app.get("/.well-known/jwks.json", tags=["keys"], summary="The public keys this connector signs answers with")
    async def jwks(request: Request) -> dict[str, list[dict[str, str]]]:
        # Public keys only; the exchange fetches them to verify answers and serves them to consumers.
        keys: dict[str, list[dict[str, str]]] = request.app.state.jwks
        return keys

    return app

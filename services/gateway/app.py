"""Gateway application factory; the lifespan owns the database, the outbox of its audit events,
the signing keys (and their refresh), the client-JWKS fetcher, the upstream replicas and the
rate limiter."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import httpx
from fastapi import FastAPI
from starlette.middleware import Middleware

from services.common import keywrap
from services.common.bus import Bus
from services.common.db import ping
from services.common.http import create_service_app
from services.common.keywrap import KeyWrap
from services.common.runtime import Runtime, service_runtime
from services.gateway import assertions, keys, mtls, service
from services.gateway.api import PassThrough, router
from services.gateway.config import GatewaySettings
from services.gateway.models import Outbox as OutboxModel
from services.gateway.ratelimit import RateLimiter
from services.gateway.upstreams import Upstreams

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("tongban.gateway")


def key_wrap(settings: GatewaySettings) -> KeyWrap:
    """The key-encryption key's wrapper; the gateway does not start without one."""
    return keywrap.required(settings.key_encryption_key, "gateway")


async def housekeeping(app: FastAPI, rt: Runtime, wrap: KeyWrap, every_s: float) -> None:
    """Every ``every_s``: the key ring as the database has it (a rotation made elsewhere), and
    the purge of expired client assertions."""
    while True:
        await asyncio.sleep(every_s)
        try:
            async with rt.sessions.begin() as session:
                keys.install(app.state, rt.verifier, await keys.load_ring(session, wrap))
                await assertions.purge_spent(session)
        except Exception:
            log.warning("gateway housekeeping failed; retrying", exc_info=True)


def create_app(settings: GatewaySettings | None = None, bus: Bus | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        wrap = key_wrap(settings)
        async with (
            service_runtime(
                settings,
                schema="gateway",
                migrations=MIGRATIONS,
                bus=bus,
                registry=app.state.metrics,
                outbox_model=OutboxModel,
            ) as rt,
            # Clients' jwks_uri documents: no redirects followed, each fetch bounded (assertions.ClientKeys).
            httpx.AsyncClient(follow_redirects=False, trust_env=False) as jwks_http,
        ):
            assert rt.outbox is not None
            # Its events are audit events: a token request does not wait for the broker's ack
            # (the row is committed with the token; the outbox publishes it right after).
            rt.outbox.waits_for_publish = False
            async with rt.sessions.begin() as session:
                await service.bootstrap(session, settings)
                keys.install(app.state, rt.verifier, await keys.prepare_ring(session, wrap))
            app.state.runtime = rt
            app.state.key_wrap = wrap
            app.state.client_keys = assertions.ClientKeys(jwks_http, settings)
            await rt.bus.start([settings.topic("audit.events")])
            await rt.outbox.start()
            refresh = asyncio.create_task(housekeeping(app, rt, wrap, settings.key_refresh_s), name="gateway-keys")
            # aiohttp rather than httpx for the proxy: at load its connection pool costs a fraction
            # of httpx's CPU per request (measured with py-spy under make bench).
            # keepalive_timeout under uvicorn's own (5 s): a pooled socket the service has already
            # closed would fail the next request sent on it.
            connector = aiohttp.TCPConnector(limit=256, keepalive_timeout=4)
            timeout = aiohttp.ClientTimeout(
                total=settings.upstream_timeout_s, sock_connect=settings.upstream_connect_timeout_s
            )
            try:
                async with aiohttp.ClientSession(
                    connector=connector, timeout=timeout, auto_decompress=False
                ) as upstream:
                    app.state.upstreams = Upstreams(
                        upstream,
                        {
                            "registry": settings.registry_url,
                            "exchange": settings.exchange_url,
                            "audit": settings.audit_url,
                            "console": settings.console_url,
                        },
                        cooloff_s=settings.upstream_cooloff_s,
                        registry=app.state.metrics,
                    )

                    async def database() -> None:
                        await ping(rt.engine)

                    # Not the broker: tokens are issued while it is away (their audit events wait in the outbox).
                    app.state.readiness = [database]
                    app.state.ratelimiter = RateLimiter(rt.engine, settings, app.state.metrics)
                    async with app.state.ratelimiter.pruning():
                        yield
            finally:
                refresh.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresh
                await rt.outbox.stop()
                await rt.bus.stop()

    app = create_service_app(
        service="gateway",
        title="Tongban gateway",
        version="0.1.0",
        description="Identity, OAuth2 tokens and routing. The only public entry of the platform.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        # The hot path: proxied paths are forwarded before FastAPI's routing (api.PassThrough).
        inner_middleware=[Middleware(PassThrough)],
    )
    app.include_router(router)
    # Outermost: nothing below ever sees a client's own word about its certificate.
    app.add_middleware(mtls.ClientCertificates, networks=settings.proxy_networks)
    return app

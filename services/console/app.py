"""Console (管理控制台) application factory: the web pages for data administrators, approvers,
platform administrators and auditors.

It is a service of its own, not part of the gateway: it renders pages (templates, catalogues,
static files), which is slow work beside the gateway's hot path of checking and forwarding every
API request, and it is a client of the platform's public API like any other — it calls the API
with the person's token through the gateway and holds no data and no authorisation of its own.
Kept apart, it scales, fails and is released on its own, and the gateway's surface stays the API;
the gateway forwards ``/console`` to it unchanged, so that the pages and the API share one origin.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from babel.support import NullTranslations
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.http import create_service_app
from services.console import api
from services.console.api import common
from services.console.assets import missing_assets
from services.console.config import ConsoleSettings
from services.console.i18n import translations
from services.console.platform import Platform
from services.console.session import Sealer

HERE = Path(__file__).parent
STATIC = HERE / "static"
# No inline script or style anywhere; scripts, styles and fonts from the console itself; Pico's
# icons are data: images; htmx talks to the console only; forms post only to it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class PageHeaders:
    """Pure ASGI: the console's Content-Security-Policy on every answer, and ``no-store`` on pages
    (they show a person's data; static files may be cached)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/console/static/")

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-security-policy"]
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


def template_environments(catalogues: dict[str, NullTranslations]) -> dict[str, Environment]:
    """One Jinja2 environment per language, each with its catalogue installed (``_()``)."""
    environments = {}
    for language, catalogue in catalogues.items():
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
        )
        env.install_gettext_translations(catalogue, newstyle=True)  # type: ignore[attr-defined]
        env.globals["static"] = lambda path: f"/console/static/{path}"
        environments[language] = env
    return environments


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if missing := missing_assets(served_only=True):
            raise RuntimeError(f"vendored assets missing ({', '.join(missing)}): run `make assets`")
        if settings.key_encryption_key is None:
            raise RuntimeError(
                "TONGBAN_KEY_ENCRYPTION_KEY is not set: the console seals its session cookies with a key derived from it"
            )
        async with httpx.AsyncClient(base_url=settings.gateway_url, timeout=settings.api_timeout_s) as client:
            catalogues = translations()
            app.state.console = common.Console(
                settings=settings,
                sealer=Sealer(settings.key_encryption_key.get_secret_value()),
                platform=Platform(client),
                templates=template_environments(catalogues),
                catalogues=catalogues,
            )

            async def gateway() -> None:
                (await client.get("/healthz")).raise_for_status()

            app.state.readiness = [gateway]
            yield

    app = create_service_app(
        service="console",
        title="Tongban console",
        version="0.1.0",
        description="Web pages for people: data administrators, approvers, platform administrators, auditors. "
        "Served at /console through the gateway; calls the platform's API with the person's token.",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,  # the import page's file (http.UPLOAD_PREFIXES)
    )
    # Starlette's trailing-slash redirect names this process's own address, not the gateway's.
    app.router.redirect_slashes = False
    app.add_middleware(PageHeaders)
    app.include_router(api.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="static")

    async def on_refused(request: Request, err: Exception) -> Response:
        assert isinstance(err, common.Refused)
        return common.refused(request, err)

    async def on_sign_in_again(request: Request, err: Exception) -> Response:
        assert isinstance(err, common.SignInAgain)
        return common.sign_in_again(request, err)

    # People get pages; a static file, /healthz or /metrics keeps the platform's problem+json.
    as_problem = {kind: app.exception_handlers[kind] for kind in (StarletteHTTPException, RequestValidationError)}

    async def on_http_error(request: Request, err: Exception) -> Response:
        path = request.url.path
        if path.startswith("/console/static/") or not (path == "/console" or path.startswith("/console/")):
            answer = as_problem[
                StarletteHTTPException if isinstance(err, StarletteHTTPException) else RequestValidationError
            ](request, err)
            return await answer if inspect.isawaitable(answer) else answer
        return common.error_page(request, err.status_code if isinstance(err, StarletteHTTPException) else 422)

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_http_error)
    app.add_exception_handler(common.Refused, on_refused)
    app.add_exception_handler(common.SignInAgain, on_sign_in_again)
    return app

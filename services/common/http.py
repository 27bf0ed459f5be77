"""What every service's FastAPI app has in common: orjson responses, problem+json errors,
bounded request ids and W3C trace context, text-only paths and query strings, a body-size limit,
security headers, Prometheus metrics, ``/healthz`` and ``/readyz``.

The middleware is plain ASGI (no ``BaseHTTPMiddleware``) because it sits on every request of the
exchange's hot path.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import (
    CommonProblem,
    Problem,
    ProblemDetails,
    install_error_handlers,
    problem_response,
    unexpected_problem,
)
from services.common.logs import bound_context, continue_trace, request_id_or_new

log = logging.getLogger("tongban.http")

ReadinessCheck = Callable[[], Awaitable[None]]


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def body_too_large(limit: int) -> Problem:
    return CommonProblem.BODY_TOO_LARGE.problem(f"The body exceeds {limit} bytes.")


class NoStoreRoute(APIRoute):
    """A route that hands out credentials (tokens): every answer, errors included, carries
    ``Cache-Control: no-store`` and ``Pragma: no-cache`` (RFC 6749 §5.1)."""


# On every response: no MIME sniffing, never framed (old and new browsers), no Referer leaks.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)
CSP, FRAME_ANCESTORS_NONE = b"content-security-policy", b"frame-ancestors 'none'"
HSTS = (b"strict-transport-security", b"max-age=31536000")  # only sent over TLS, as RFC 6797 says
NO_STORE = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
# Operational endpoints polled by orchestrators and Prometheus: not worth a log line each.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def text_problem(scope: Scope) -> Problem | None:
    """A 422 when the path or query string, percent-decoded, is not text a database can store:
    invalid UTF-8 (lone surrogates included) or NUL. Checked on the raw bytes, before Starlette
    decodes them leniently into something that reaches a route."""
    raw_path = scope.get("raw_path")
    checks = (
        ("path", raw_path if raw_path is not None else scope["path"].encode("utf-8", "surrogatepass")),
        ("query string", scope.get("query_string", b"").replace(b"+", b" ")),
    )
    for where, raw in checks:
        try:
            text = unquote_to_bytes(raw).decode("utf-8")  # strict: refuses surrogates, overlongs
        except UnicodeDecodeError:
            return CommonProblem.VALIDATION.problem(f"The {where} is not valid UTF-8 once percent-decoded.")
        if "\x00" in text:
            return CommonProblem.VALIDATION.problem(f"The {where} contains a NUL character.")
    return None


# Routes whose body is a file a person uploads (a spreadsheet of catalogue entries), allowed
# ``max_upload_bytes`` instead of ``max_body_bytes``; the gateway forwards them with the same limit.
# The console's import page is one: it takes the person's file (multipart) and sends it to the registry.
UPLOAD_PREFIXES = ("/v1/registry/imports/", "/console/catalogue/import")


def is_upload(path: str) -> bool:
    return path.startswith(UPLOAD_PREFIXES)


class ServiceMiddleware:
    """Bounded request id (``X-Request-Id`` if acceptable, else a new one), W3C trace context,
    text-only paths and query strings, body-size limit, security headers, request metrics and
    one log line per request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        registry: CollectorRegistry,
        service: str,
        max_upload_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes if max_upload_bytes is not None else max_body_bytes
        self.requests = Counter(
            "http_requests", "HTTP requests handled", ["service", "method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_or_new(_header(scope, b"x-request-id"))
        with bound_context(rid, continue_trace(_header(scope, b"traceparent"))):
            await self._handle(scope, receive, _with_headers(send, scope, rid))

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        try:
            if (refused := text_problem(scope)) is not None:
                status = refused.status
                await problem_response(refused)(scope, receive, send)
                return
            limit = self.max_upload_bytes if is_upload(scope["path"]) else self.max_body_bytes
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await problem_response(body_too_large(limit))(scope, receive, send)
                status = 413
                return
            received = 0
            too_large = False

            async def limited_receive() -> Message:
                # A chunked body can exceed the limit without a Content-Length: stop reading, end
                # the body early, and replace whatever the app answers with the 413 below.
                nonlocal received, too_large
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        too_large = True
                        return {"type": "http.request", "body": b"", "more_body": False}
                return message

            started_response = False

            async def send_checked(message: Message) -> None:
                nonlocal status, started_response
                started_response = started_response or message["type"] == "http.response.start"
                if too_large:
                    if message["type"] == "http.response.start":
                        status = 413
                        await problem_response(body_too_large(limit))(scope, receive, send)
                    return
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, limited_receive, send_checked)
            except Exception as exc:
                # Answered here, not by Starlette's outer handler, so the problem carries the request id.
                if started_response:
                    log.exception("unhandled error after the response started", exc_info=exc)
                    raise
                problem = unexpected_problem(exc)
                status = problem.status
                await problem_response(problem)(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            self.requests.labels(self.service, scope["method"], path, str(status)).inc()
            self.latency.labels(self.service, scope["method"], path).observe(elapsed)
            if path not in QUIET_PATHS:
                log.info(
                    "request handled",
                    extra={
                        "ctx_method": scope["method"],
                        "ctx_route": path,
                        "ctx_status": status,
                        "ctx_ms": round(elapsed * 1000, 1),
                    },
                )


def _header(scope: Scope, name: bytes) -> str | None:
    """The request header ``name``; repeated ones joined with ", " as RFC 9110 §5.3 allows (so a
    repeated ``traceparent`` is invalid and dropped, as W3C Trace Context requires)."""
    values = [value for key, value in scope["headers"] if key == name]
    if not values:
        return None
    return b", ".join(values).decode("latin-1")


def _with_headers(send: Send, scope: Scope, rid: str) -> Send:
    """``send`` that puts the request id and the security headers on the response (replacing any
    the app set, so a proxied answer does not carry two), and no-store on a :class:`NoStoreRoute`'s.
    A Content-Security-Policy of the app's own that also says ``frame-ancestors 'none'`` is kept."""
    ours = [(b"x-request-id", rid.encode()), *SECURITY_HEADERS]
    if scope.get("scheme") == "https":
        ours.append(HSTS)

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = ours
            if isinstance(scope.get("route"), NoStoreRoute):
                headers = [*ours, *NO_STORE]
            if any(k.lower() == CSP and FRAME_ANCESTORS_NONE in v for k, v in message.get("headers", [])):
                # The app's own policy (the console's pages), which forbids framing as ours does: kept.
                headers = [h for h in headers if h[0] != CSP]
            names = {name for name, _ in headers}
            message["headers"] = [
                *((k, v) for k, v in message.get("headers", []) if k.lower() not in names),
                *headers,
            ]
        await send(message)

    return wrapped


def frozen_after_startup(lifespan: Callable[[FastAPI], Any]) -> Callable[[FastAPI], Any]:
    """``lifespan``, then ``gc.freeze()``: what startup built (modules, metadata, clients) lives as
    long as the process, so the collector stops walking it. Before, each full collection walked it
    all and paused the event loop for 70-200 ms, which was most of the query p99."""

    @asynccontextmanager
    async def wrapped(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            gc.collect()
            gc.freeze()
            yield

    return wrapped


def document_problems(app: FastAPI) -> None:
    """Put the problem+json schema that routes' ``responses=`` refer to into the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["ProblemDetails"] = ProblemDetails.model_json_schema()
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def create_service_app(
    *,
    service: str,
    title: str,
    version: str,
    lifespan: Callable[[FastAPI], Any],
    max_body_bytes: int,
    description: str = "",
    max_upload_bytes: int | None = None,
    inner_middleware: Sequence[Middleware] = (),
) -> FastAPI:
    """A FastAPI app with the common middleware, error handlers and operational endpoints.

    The lifespan stores readiness checks in ``app.state.readiness`` (a list of async callables).
    ``inner_middleware`` (outermost first) runs inside ServiceMiddleware, so whatever it answers
    itself still gets the request id, the body limit, the security headers, metrics and the log.
    """
    registry = CollectorRegistry()
    app = FastAPI(
        title=title,
        version=version,
        description=description,
        lifespan=frozen_after_startup(lifespan),
        default_response_class=OrjsonResponse,
        # The platform has its own trace context, Prometheus metrics and JSON logs, and installs no
        # OpenTelemetry provider: left on, FastAPI's native telemetry looks the global providers up
        # (and reads the environment) on every request, 3 % of the gateway's samples under load.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.metrics = registry
    document_problems(app)
    app.state.readiness = []
    install_error_handlers(app)
    for inner in reversed(inner_middleware):
        app.add_middleware(inner.cls, *inner.args, **inner.kwargs)
    app.add_middleware(
        ServiceMiddleware,
        max_body_bytes=max_body_bytes,
        max_upload_bytes=max_upload_bytes,
        registry=registry,
        service=service,
    )

    @app.get("/healthz", tags=["operations"], summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["operations"], summary="Database and broker reachable")
    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        for check in request.app.state.readiness:
            name = getattr(check, "__name__", "check")
            try:
                await check()
                checks[name] = "ok"
            except Exception as err:
                checks[name] = f"failing: {err}"
        ready = all(v == "ok" for v in checks.values())
        if not ready:
            return problem_response(CommonProblem.NOT_READY.problem("; ".join(f"{k}: {v}" for k, v in checks.items())))
        return OrjsonResponse({"status": "ready", "checks": checks})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)

    return app

"""What every service's FastAPI app has in common: orjson responses, problem+json errors,
request ids, a body-size limit, Prometheus metrics, ``/healthz`` and ``/readyz``.

The middleware is plain ASGI (no ``BaseHTTPMiddleware``) because it sits on every request of the
exchange's hot path.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
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
from services.common.logs import request_id_var

REQUEST_ID_HEADER = "x-request-id"
log = logging.getLogger("tongban.http")

ReadinessCheck = Callable[[], Awaitable[None]]


class OrjsonResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def body_too_large(limit: int) -> Problem:
    return CommonProblem.BODY_TOO_LARGE.problem(f"The body exceeds {limit} bytes.")


class ServiceMiddleware:
    """Request id (taken from ``X-Request-ID`` or made), body-size limit, request metrics."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, registry: CollectorRegistry, service: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
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
        rid = _header(scope, b"x-request-id") or uuid.uuid4().hex
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500
        try:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                await problem_response(body_too_large(self.max_body_bytes))(scope, receive, _with_rid(send, rid))
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
                    if received > self.max_body_bytes:
                        too_large = True
                        return {"type": "http.request", "body": b"", "more_body": False}
                return message

            async def send_checked(message: Message) -> None:
                nonlocal status
                if too_large:
                    if message["type"] == "http.response.start":
                        status = 413
                        await problem_response(body_too_large(self.max_body_bytes))(
                            scope, receive, _with_rid(send, rid)
                        )
                    return
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            started_response = False

            async def send_tracked(message: Message) -> None:
                nonlocal started_response
                started_response = started_response or message["type"] == "http.response.start"
                await send_checked(message)

            try:
                await self.app(scope, limited_receive, _with_rid(send_tracked, rid))
            except Exception as exc:
                # Answered here, not by Starlette's outer handler, so the problem carries the request id.
                if started_response:
                    log.exception("unhandled error after the response started", exc_info=exc)
                    raise
                problem = unexpected_problem(exc)
                status = problem.status
                await problem_response(problem)(scope, receive, _with_rid(send, rid))
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.requests.labels(self.service, scope["method"], path, str(status)).inc()
            self.latency.labels(self.service, scope["method"], path).observe(time.perf_counter() - started)
            request_id_var.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _with_rid(send: Send, rid: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
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
) -> FastAPI:
    """A FastAPI app with the common middleware, error handlers and operational endpoints.

    The lifespan stores readiness checks in ``app.state.readiness`` (a list of async callables).
    """
    registry = CollectorRegistry()
    app = FastAPI(
        title=title,
        version=version,
        description=description,
        lifespan=frozen_after_startup(lifespan),
        default_response_class=OrjsonResponse,
    )
    app.state.metrics = registry
    document_problems(app)
    app.state.readiness = []
    install_error_handlers(app)
    app.add_middleware(ServiceMiddleware, max_body_bytes=max_body_bytes, registry=registry, service=service)

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

"""One error type, one handler, one shape: RFC 9457 ``application/problem+json``.

Raise :class:`Problem` (or a subclass) anywhere; :func:`install_error_handlers` renders it — and
FastAPI's validation errors, and anything unexpected — with ``type``, ``title``, ``status``,
``detail`` and ``request_id``.
"""

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.common.db import database_unavailable
from services.common.logs import request_id_var

PROBLEM_BASE = "https://tongban.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

log = logging.getLogger("tongban.errors")


class Problem(Exception):
    """An error a client can act on. ``code`` becomes the problem ``type`` (…/problems/<code>)."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail or title
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "request_id": request_id_var.get(),
            **self.extra,
        }


class NotFound(Problem):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(404, "not-found", f"{what} not found", f"No {what} {key!r} is visible to you.")


def unexpected_problem(exc: Exception) -> Problem:
    """The answer to an exception no route expected, logged: 503 when the database is out of
    reach (the client should retry; nothing was committed), else 500."""
    if database_unavailable(exc):
        log.warning("database unavailable", exc_info=exc)
        return Problem(
            503,
            "database-unavailable",
            "Database unavailable",
            "The service cannot reach its database right now; nothing was changed. Retry shortly.",
            headers={"Retry-After": "1"},
        )
    log.exception("unhandled error", exc_info=exc)
    return Problem(500, "internal", "Internal error", "The error was logged; quote request_id.")


def problem_response(problem: Problem) -> Response:
    return Response(
        orjson.dumps(problem.body()),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=problem.headers,
    )


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if p not in ("body", "query", "path", "header"))


def install_error_handlers(app: FastAPI) -> None:
    async def on_problem(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": _field_path(e.get("loc", ())), "message": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return problem_response(Problem(422, "validation", "Request is not valid", detail, extra={"errors": errors}))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem_response(Problem(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        return problem_response(unexpected_problem(exc))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)

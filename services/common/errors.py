"""One error type, one handler, one shape: RFC 9457 ``application/problem+json``.

Every problem a service can answer is a member of a catalogue: :class:`CommonProblem` here, and
one :class:`ProblemCode` subclass per service (``services/<name>/problems.py``). A member knows
its HTTP status and title; ``raise Catalogue.MEMBER.problem(detail)`` makes the error, and
:func:`problem_responses` lists members in a route's OpenAPI ``responses=``.
:func:`install_error_handlers` renders problems — and FastAPI's validation errors, and anything
unexpected — with ``type``, ``title``, ``status``, ``detail`` and ``request_id``.
"""

import logging
from enum import StrEnum
from typing import Any, Self

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.common.db import database_unavailable
from services.common.logs import request_id_var

PROBLEM_BASE = "https://tongban.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"

log = logging.getLogger("tongban.errors")


class ProblemCode(StrEnum):
    """Base of the problem catalogues: ``MEMBER = "code", status, "Title"``. The code is the last
    segment of the problem ``type`` URI, a contract clients branch on: never rename one."""

    status: int
    headline: str  # the problem's ``title`` (str.title is taken)

    def __new__(cls, code: str, status: int, headline: str) -> Self:
        member = str.__new__(cls, code)
        member._value_ = code
        member.status = status
        member.headline = headline
        return member

    def problem(
        self, detail: str | None = None, *, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> "Problem":
        return Problem(self.status, self, self.headline, detail, extra=extra, headers=headers)


class CommonProblem(ProblemCode):
    """Problems every service can answer (the middleware, the token check, the error handlers)."""

    VALIDATION = "validation", 422, "Request is not valid"
    NOT_FOUND = "not-found", 404, "Not found"
    METHOD_NOT_ALLOWED = "method-not-allowed", 405, "Method not allowed"
    HTTP_ERROR = "http-error", 400, "Bad request"
    INVALID_PATH = "invalid-path", 400, "Path not allowed"
    UNAUTHORIZED = "unauthorized", 401, "Authentication required"
    FORBIDDEN = "forbidden", 403, "Not allowed"
    BODY_TOO_LARGE = "body-too-large", 413, "Request body too large"
    DATABASE_UNAVAILABLE = "database-unavailable", 503, "Database unavailable"
    JWKS_UNAVAILABLE = "jwks-unavailable", 503, "Cannot verify tokens now"
    NOT_READY = "not-ready", 503, "Not ready"
    INTERNAL = "internal", 500, "Internal error"


class Problem(Exception):
    """An error a client can act on. ``code`` becomes the problem ``type`` (…/problems/<code>).
    Make one from a catalogue member (``CommonProblem.NOT_FOUND.problem(...)``)."""

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
    """Absent, or not yours: the same answer, so that existence does not leak (a denial for another
    department's object looks exactly like this)."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(404, CommonProblem.NOT_FOUND, f"{what} not found", f"No {what} {key!r} is visible to you.")


def problem_responses(*codes: ProblemCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status with the problem codes it may carry."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(code.status, []).append(str(code))
    return {
        status: {
            "description": "problem+json; type …/problems/" + " | ".join(names),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for status, names in sorted(by_status.items())
    }


def unexpected_problem(exc: Exception) -> Problem:
    """The answer to an exception no route expected, logged: 503 when the database is out of
    reach (the client should retry; nothing was committed), else 500."""
    if database_unavailable(exc):
        log.warning("database unavailable", exc_info=exc)
        return CommonProblem.DATABASE_UNAVAILABLE.problem(
            "The service cannot reach its database right now; nothing was changed. Retry shortly.",
            headers={"Retry-After": "1"},
        )
    log.exception("unhandled error", exc_info=exc)
    return CommonProblem.INTERNAL.problem("The error was logged; quote request_id.")


class ProblemDetails(BaseModel):
    """The body of every error (RFC 9457), as documented in each service's OpenAPI."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None


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
        return problem_response(CommonProblem.VALIDATION.problem(detail, extra={"errors": errors}))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: CommonProblem.NOT_FOUND, 405: CommonProblem.METHOD_NOT_ALLOWED}.get(
            exc.status_code, CommonProblem.HTTP_ERROR
        )
        return problem_response(Problem(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})))

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        return problem_response(unexpected_problem(exc))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)

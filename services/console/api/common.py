"""What every page of the console shares: the console's state, the session of the visitor, CSRF,
the navigation, rendering a page and redirecting, and calling the platform's API as the person;
the page of one API object, and a form's refusal by the API shown next to its fields.

Each module of pages beside this one makes its router with ``page_router()``."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any

from babel.support import NullTranslations
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from services.common.logs import request_id_var
from services.common.security import PERSON_ROLES, Role
from services.console.config import ConsoleSettings
from services.console.i18n import N_
from services.console.platform import ApiProblem, Platform
from services.console.session import COOKIE, COOKIE_PATH, Sealer, Session, csrf_matches

SAFE_METHODS = frozenset({"GET", "HEAD"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class NavItem:
    """An entry of the navigation, shown to whoever holds one of ``roles`` (the API still decides)."""

    path: str
    label: str
    roles: frozenset[str]


# The whole navigation, by the roles whose work each entry is (the pages' modules, in this order).
NAV = (
    NavItem("/console/catalogue", N_("Catalogue"), frozenset(PERSON_ROLES)),
    NavItem("/console/lists", N_("Lists"), frozenset({Role.DATA_ADMIN})),
    NavItem("/console/service-items", N_("Service items"), frozenset({Role.DATA_ADMIN})),
    NavItem("/console/my-applications", N_("Our applications"), frozenset({Role.DATA_ADMIN})),
    NavItem("/console/applications", N_("Pending applications"), frozenset({Role.APPROVER})),
    NavItem("/console/admin", N_("Administration"), frozenset({Role.PLATFORM_ADMIN})),
    NavItem("/console/audit", N_("Audit"), frozenset({Role.AUDITOR})),
)
HOME = "/console/catalogue"


@dataclass
class Console:
    """What the pages need, made by the lifespan: settings, the cookie sealer, the API client and
    one template environment per language."""

    settings: ConsoleSettings
    sealer: Sealer
    platform: Platform
    templates: dict[str, Environment]
    # Each language's messages, for text a page sends as data rather than through a template.
    catalogues: dict[str, NullTranslations]
    # Department codes → names, for display only (GET /v1/departments, which every person may
    # read): refreshed by a person's page at most every DEPARTMENT_NAMES_TTL_S; a code not in it
    # is shown as the code.
    department_names: dict[str, str] = field(default_factory=dict)
    department_names_at: float = -math.inf


class Refused(Exception):
    """A request the console does not carry out (no or a wrong CSRF token): a page saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SignInAgain(Exception):
    """The session is over (idle, token expired, or the API no longer takes its token)."""

    def __init__(self, session: Session, *, expired: bool = True) -> None:
        super().__init__("session expired")
        self.session, self.expired = session, expired


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> Session:
    """The visitor's session from the cookie; a new anonymous one when there is none (or it does
    not open). A logged-in session that has been idle too long ends here."""
    console = console_of(request)
    session = console.sealer.open(request.cookies.get(COOKIE)) or Session()
    now = time.time()
    if session.idle(now, console.settings.idle_timeout_s):
        raise SignInAgain(session.signed_out())
    return replace(session, last_seen=now) if session.signed_in else session


SessionDep = Annotated[Session, Depends(session_of)]


async def csrf_protected(request: Request) -> None:
    """Every request that is not a GET or HEAD carries the session's CSRF token, as a form field
    (of an urlencoded form, or of a multipart one: a file's upload) or (htmx) a header;
    SameSite=Strict on the cookie is a second line, not the only one."""
    if request.method in SAFE_METHODS:
        return
    session = console_of(request).sealer.open(request.cookies.get(COOKIE))
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(FORM_TYPES):
        sent = str((await request.form()).get(CSRF_FIELD) or "") or None
    if session is None or not csrf_matches(session, sent):
        raise Refused(403, N_("This form has expired or did not come from the console. Reload the page and try again."))


def page_router() -> APIRouter:
    """A router for a module of pages: under ``/console``, every unsafe request CSRF-checked. Pages
    are not API endpoints: they are left out of the console's OpenAPI document."""
    return APIRouter(prefix="/console", dependencies=[Depends(csrf_protected)], include_in_schema=False)


def with_cookie(request: Request, response: Response, session: Session) -> Response:
    response.set_cookie(
        COOKIE,
        console_of(request).sealer.seal(session),
        path=COOKIE_PATH,
        httponly=True,
        secure=True,
        samesite="strict",
    )
    return response


def page(request: Request, session: Session, template: str, status: int = 200, **context: object) -> Response:
    """A page in the session's language, the session's cookie renewed (its idle time restarts)."""
    env = console_of(request).templates[session.language]
    nav = [
        {
            "path": item.path,
            "label": item.label,
            "current": request.url.path in (item.path,) or request.url.path.startswith(item.path + "/"),
        }
        for item in NAV
        if item.roles & set(session.roles)
    ]
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    context.setdefault("request_id", request_id_var.get())
    names = console_of(request).department_names
    context.setdefault("dept_name", lambda code: names.get(str(code), str(code)))
    html = env.get_template(template).render(session=session, nav=nav, here=here, **context)
    return with_cookie(request, HTMLResponse(html, status_code=status), session)


def go(request: Request, session: Session, to: str) -> Response:
    """To another page (303: the browser GETs it), or for htmx, a full-page redirect."""
    if request.headers.get("hx-request") == "true":
        response: Response = Response(status_code=204, headers={"HX-Redirect": to})
    else:
        response = RedirectResponse(to, status_code=303)
    return with_cookie(request, response, session)


def local_path(to: str | None) -> str:
    """A path inside the console to return to (never another site: no open redirect)."""
    if to and len(to) <= 2000 and (to == "/console" or to.startswith(("/console/", "/console?"))) and "\\" not in to:
        return to
    return HOME


DEPARTMENT_NAMES_TTL_S = 300.0


async def refresh_department_names(request: Request, session: Session) -> None:
    """Department names as the person may read them, when those kept are older than the TTL (one
    refresh at a time; a failed one is tried again after the TTL — the pages show codes meanwhile)."""
    console = console_of(request)
    if time.monotonic() - console.department_names_at < DEPARTMENT_NAMES_TTL_S:
        return
    console.department_names_at = time.monotonic()
    try:
        answer = await console.platform.get(session, "/v1/departments", {"limit": "500"})
    except ApiProblem:
        return
    console.department_names = {str(d["code"]): str(d["name"]) for d in answer["items"]}


async def person_of(request: Request, session: SessionDep) -> Session:
    """The session of a page for people who have logged in; the others go to the login page."""
    if not session.signed_in:
        raise SignInAgain(session, expired=False)
    await refresh_department_names(request, session)
    return session


PersonDep = Annotated[Session, Depends(person_of)]


def readable(problem: ApiProblem) -> str:
    """What the API said, for a person (its problem's title and detail; never a stack trace)."""
    return " — ".join(part for part in (problem.title, problem.detail) if part) or problem.code


async def api_get(request: Request, session: Session, path: str, params: dict[str, str] | None = None) -> Any:
    """The JSON of a GET on the API as the person; a 401 ends the session (SignInAgain), any other
    refusal is the caller's to show (ApiProblem)."""
    try:
        return await console_of(request).platform.get(session, path, params)
    except ApiProblem as refused:
        if refused.status == 401:
            raise SignInAgain(session.signed_out()) from refused
        raise


async def api_send(
    request: Request, session: Session, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """The JSON answer (None when empty) of a POST, PUT, PATCH or DELETE on the API as the person;
    refusals as for ``api_get``."""
    try:
        return await console_of(request).platform.send(session, method, path, body)
    except ApiProblem as refused:
        if refused.status == 401:
            raise SignInAgain(session.signed_out()) from refused
        raise


def problem_page(request: Request, session: Session, refused: ApiProblem, message: str | None = None) -> Response:
    """What the API would not give (not found, not allowed…): our ``message`` if any, then the
    API's own words, with the API's status."""
    return page(request, session, "problem.html", status=refused.status, message=message, said=readable(refused))


def sign_in_again(request: Request, err: SignInAgain) -> Response:
    return go(request, err.session, "/console/login?notice=expired" if err.expired else "/console/login")


def refused(request: Request, err: Refused) -> Response:
    console = console_of(request)
    session = console.sealer.open(request.cookies.get(COOKIE)) or Session()
    return page(request, session, "refused.html", status=err.status, message=err.message)


# What a person is told when a request goes wrong before any page's code runs.
HTTP_ERRORS = {
    404: N_("No such page."),
    405: N_("No such page."),
    422: N_("This address is not valid. Go back and try again."),
}


def error_page(request: Request, status: int) -> Response:
    """A page, not problem+json, for an unknown address under /console, a method it does not take
    or a malformed query: people see the console's own page in their language, never JSON."""
    console = console_of(request)
    session = console.sealer.open(request.cookies.get(COOKIE)) or Session()
    message = HTTP_ERRORS.get(status, N_("Not available"))
    return page(request, session, "problem.html", status=status, message=message, said="")


async def object_page(
    request: Request,
    session: Session,
    path: str | None,
    template: str,
    *,
    name: str,
    what: str,
    missing: Mapping[str, str],
    status: int = 200,
    more: Callable[[Any], Awaitable[dict[str, object]]] | None = None,
    **context: object,
) -> Response:
    """The page of one object of the API: GET ``path`` as the person and render ``template`` with
    the answer as ``name``, ``context`` and what ``more`` makes of the answer (it may call the API
    too). A path None — an id that cannot be one — is not found without asking the API (``what``
    names it in the detail). A refusal is the problem page, led by our words for its problem code
    in ``missing`` (not found, not allowed), if any."""
    try:
        if path is None:
            raise ApiProblem(404, "not-found", "Not found", what)
        found = await api_get(request, session, path)
        made = await more(found) if more is not None else {}
    except ApiProblem as refused:
        return problem_page(request, session, refused, missing.get(refused.code))
    return page(request, session, template, status=status, **{name: found}, **context, **made)


REFUSED = N_("The platform refused this.")


def form_fields(typed: Iterable[str], prefix: str = "") -> dict[str, str]:
    """The ``fields`` of ``refusal_errors`` for a form whose fields are the API's, each named
    ``prefix`` + the API's name (a page with several forms tells theirs apart so)."""
    return {name.removeprefix(prefix): name for name in typed if name.startswith(prefix)}


def refusal_errors(
    refused: ApiProblem,
    fields: Mapping[str, str],
    problems: Mapping[str, str],
    *,
    form: str = "form",
    otherwise: str = REFUSED,
    sentences: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The API's refusal of a form (problem+json, its ``errors`` by field) as the form's errors.

    Each field the API names that the form shows (``fields``: the API's name → the form's; a check
    of the whole body is named "") gets the API's message next to it — or, for a form field with
    a sentence of ours in ``sentences``, that sentence with the API's message under it as
    ``<field>_detail``. A refusal naming none of them is one error above the form (``form``): our
    words for its problem code (``problems``, else ``otherwise``), the API's as ``<form>_detail``."""
    errors: dict[str, str] = {}
    for name, message in refused.fields.items():
        field = fields.get(name)
        if field is None:
            continue
        if sentences is None:
            errors[field] = message
        elif field in sentences:
            errors[field], errors[f"{field}_detail"] = sentences[field], message
    return errors or {form: problems.get(refused.code, otherwise), f"{form}_detail": readable(refused)}


async def api_refusal(
    request: Request, session: Session, method: str, path: str, body: dict[str, Any] | None = None
) -> ApiProblem | None:
    """What a form's POST handler sends, as ``api_send``, when it needs only to know whether the
    API took it: None if it did, else the API's refusal, for the form to show next to its fields."""
    try:
        await api_send(request, session, method, path, body)
    except ApiProblem as refused:
        return refused
    return None


def local_time(text: object, request: Request) -> str:
    """An API time in the platform's zone (TONGBAN_TIMEZONE), to the second, for people."""
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return str(text)
    zone = console_of(request).settings.zone
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")

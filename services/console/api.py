"""The console's pages: HTTP in, one call of the platform's API, a rendered page out."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from services.common.security import PERSON_ROLES, Role
from services.console.config import ConsoleSettings
from services.console.i18n import N_
from services.console.platform import UNREACHABLE, ApiProblem, Platform
from services.console.session import COOKIE, COOKIE_PATH, LANGUAGES, Sealer, Session, csrf_matches

SAFE_METHODS = frozenset({"GET", "HEAD"})
# The gateway's own limits (services/gateway/schemas.py: Login) and the registry's search (q).
USERNAME_MAX, PASSWORD_MAX, SEARCH_MAX = 64, 128, 100
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

# What the login page may say on arrival (?notice=…), and why.
NOTICES = {
    "expired": N_("Your session has expired. Please log in again."),
    "signed-out": N_("You have logged out."),
}
# The gateway's login problems (services/gateway/problems.py) → (field, message) next to it.
LOGIN_PROBLEMS = {
    "invalid-credentials": ("password", N_("Wrong username or password.")),
    "account-locked": ("username", N_("This account is locked after repeated failed logins. Try again later.")),
    "account-disabled": ("username", N_("This account is disabled. Ask a platform administrator.")),
    "rate-limited": ("password", N_("Too many attempts. Wait a moment and try again.")),
    "validation-error": ("username", N_("Check the username and password.")),
}
STATUSES = {
    "draft": N_("Draft"),
    "submitted": N_("Submitted"),
    "published": N_("Published"),
    "deprecated": N_("Deprecated"),
}

VERSION_STATUSES = STATUSES | {"superseded": N_("Superseded")}
CLASSIFICATIONS = {
    "basic": N_("Basic"),
    "theme": N_("Thematic"),
    "department": N_("Departmental"),
}
SHARE_TYPES = {
    "unconditional": N_("Shared without conditions"),
    "conditional": N_("Shared on conditions"),
    "none": N_("Not shared"),
}


@dataclass(frozen=True)
class NavItem:
    """An entry of the navigation, shown to whoever holds one of ``roles`` (the API still decides)."""

    path: str
    label: str
    roles: frozenset[str]


NAV = (
    NavItem("/console/catalogue", N_("Catalogue"), frozenset(PERSON_ROLES)),
    NavItem("/console/applications", N_("Pending applications"), frozenset({Role.APPROVER})),
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
    or (htmx) a header; SameSite=Strict on the cookie is a second line, not the only one."""
    if request.method in SAFE_METHODS:
        return
    session = console_of(request).sealer.open(request.cookies.get(COOKIE))
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        sent = str((await request.form()).get(CSRF_FIELD) or "") or None
    if session is None or not csrf_matches(session, sent):
        raise Refused(403, N_("This form has expired or did not come from the console. Reload the page and try again."))


router = APIRouter(prefix="/console", dependencies=[Depends(csrf_protected)])


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
        {"path": item.path, "label": item.label, "current": request.url.path == item.path}
        for item in NAV
        if item.roles & set(session.roles)
    ]
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
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


@router.get("", include_in_schema=True, summary="The console: the first page of a person's roles, or login")
async def home(request: Request, session: SessionDep) -> Response:
    return go(request, session, HOME if session.signed_in else "/console/login")


@router.get("/", include_in_schema=False)  # /console/ as typed: the same as /console
async def home_slash(request: Request, session: SessionDep) -> Response:
    return await home(request, session)


@router.get("/login", response_class=HTMLResponse, summary="Login page")
async def login_page(request: Request, session: SessionDep, notice: str | None = None) -> Response:
    if session.signed_in:
        return go(request, session, HOME)
    return page(request, session, "login.html", notice=NOTICES.get(notice or ""), username="", errors={})


@router.post("/login", response_class=HTMLResponse, summary="Log in with a platform account")
async def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    username = username.strip()
    errors: dict[str, str] = {}
    # Checked here rather than by FastAPI: a form's errors are shown next to its fields, not as JSON.
    if not username:
        errors["username"] = N_("Enter your username.")
    elif len(username) > USERNAME_MAX:
        errors["username"] = N_("A username has at most 64 characters.")
    if not password:
        errors["password"] = N_("Enter your password.")
    elif len(password) > PASSWORD_MAX:
        errors["password"] = N_("A password has at most 128 characters.")
    if not errors:
        try:
            signed_in = await console_of(request).platform.login(session, username, password)
        except ApiProblem as problem:
            field, message = LOGIN_PROBLEMS.get(problem.code, ("password", N_("The platform is not available now.")))
            if problem.code == UNREACHABLE or problem.status >= 500:
                field, message = "password", N_("The platform is not available now.")
            errors[field] = message
        else:
            return go(request, signed_in, HOME)
    return page(request, session, "login.html", status=400, notice=None, username=username, errors=errors)


@router.post("/logout", summary="Log out")
async def logout(request: Request, session: SessionDep) -> Response:
    return go(request, session.signed_out(), "/console/login?notice=signed-out")


@router.post("/language", summary="Switch the console's language")
async def language(
    request: Request,
    session: SessionDep,
    language: Annotated[str, Form()] = "",
    next: Annotated[str | None, Form()] = None,
) -> Response:
    if language in LANGUAGES:
        session = replace(session, language=language)
    return go(request, session, local_path(next))


def person_of(session: SessionDep) -> Session:
    """The session of a page for people who have logged in; the others go to the login page."""
    if not session.signed_in:
        raise SignInAgain(session, expired=False)
    return session


PersonDep = Annotated[Session, Depends(person_of)]


def readable(problem: ApiProblem) -> str:
    """What the API said, for a person (its problem's title and detail; never a stack trace)."""
    return " — ".join(part for part in (problem.title, problem.detail) if part) or problem.code


@router.get("/catalogue", response_class=HTMLResponse, summary="Search the catalogue (目录)")
async def catalogue(
    request: Request,
    session: PersonDep,
    q: str = "",
    cursor: str | None = None,
) -> Response:
    params = {"limit": "50"} | ({"q": q} if q.strip() else {}) | ({"cursor": cursor} if cursor else {})
    resources: list[dict[str, object]] = []
    next_cursor, problem, q_error = None, None, None
    if len(q) > SEARCH_MAX:
        q_error = N_("Search for at most 100 characters.")
    else:
        try:
            answer = await console_of(request).platform.get(session, "/v1/registry/resources", params)
            resources, next_cursor = answer["items"], answer["next_cursor"]
        except ApiProblem as refused:
            if refused.status == 401:
                raise SignInAgain(session.signed_out()) from refused
            problem = readable(refused)
    next_query = urlencode({"q": q, "cursor": next_cursor}) if next_cursor else ""
    return page(
        request,
        session,
        "catalogue.html",
        q=q,
        resources=resources,
        next_cursor=next_cursor,
        next_query=next_query,
        problem=problem,
        q_error=q_error,
        statuses=STATUSES,
        classifications=CLASSIFICATIONS,
    )


@router.get("/catalogue/{code:path}", response_class=HTMLResponse, summary="A catalogue entry, its items and versions")
async def resource(request: Request, session: PersonDep, code: str) -> Response:
    platform = console_of(request).platform
    path = f"/v1/registry/resources/{quote(code, safe='/')}"
    try:
        entry = await platform.get(session, path)
    except ApiProblem as refused:
        if refused.status == 401:
            raise SignInAgain(session.signed_out()) from refused
        # Another department's draft is "not found" to the API, and so to the person.
        message = N_("No such catalogue entry.") if refused.status == 404 else None
        return page(request, session, "problem.html", status=refused.status, message=message, said=readable(refused))
    try:
        versions = (await platform.get(session, f"{path}/versions"))["items"]
    except ApiProblem as refused:
        if refused.status == 401:
            raise SignInAgain(session.signed_out()) from refused
        versions = None  # the history is the provider's and the platform admin's to see (the API says)
    return page(
        request,
        session,
        "resource.html",
        entry=entry,
        versions=versions,
        statuses=STATUSES,
        version_statuses=VERSION_STATUSES,
        share_types=SHARE_TYPES,
        classifications=CLASSIFICATIONS,
    )


@router.get("/applications", response_class=HTMLResponse, summary="The department's pending applications (待审批)")
async def applications(request: Request, session: PersonDep, cursor: str | None = None) -> Response:
    """The approver's queue as the registry gives it (``status=pending&provider=<department>``):
    oldest, so most urgent, first, with the working days left (工作日) and the overdue ones marked."""
    params = {"status": "pending", "provider": session.department, "limit": "50"} | (
        {"cursor": cursor} if cursor else {}
    )
    queue: dict[str, object] = {"items": [], "next_cursor": None, "overdue": 0}
    problem = None
    try:
        queue = await console_of(request).platform.get(session, "/v1/registry/applications", params)
    except ApiProblem as refused:
        if refused.status == 401:
            raise SignInAgain(session.signed_out()) from refused
        problem = readable(refused)
    return page(request, session, "applications.html", queue=queue, problem=problem)


APPLICATION_STATUSES = {
    "pending": N_("Pending"),
    "approved": N_("Approved"),
    "rejected": N_("Rejected"),
    "refused": N_("Refused (not shared)"),
}
WHOLE_NUMBER = N_("Enter a whole number.")
# The registry's decision problems (services/registry/problems.py) in the person's language; the
# API's detail follows in its own words (which values were refused).
DECISION_PROBLEMS = {
    "widening": N_("An approval may only narrow what was asked for."),
    "unknown-items": N_("Some items are not items of this entry."),
    "invalid-state": N_("This application has already been decided."),
    "forbidden": N_("You may not decide this application."),
}


def application_path(application_id: str) -> str | None:
    """The API's path of an application, or None for an id that cannot be one (a UUID)."""
    try:
        return f"/v1/registry/applications/{uuid.UUID(application_id)}"
    except ValueError:
        return None


async def application_page(
    request: Request,
    session: Session,
    application_id: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, object] | None = None,
) -> Response:
    """An application with, while it is pending, the forms to approve (narrowed) or reject it;
    ``errors`` next to their fields and ``typed`` what the person had entered."""
    path = application_path(application_id)
    try:
        if path is None:
            raise ApiProblem(404, "not-found", "Not found", f"application {application_id}")
        application = await console_of(request).platform.get(session, path)
    except ApiProblem as refused:
        if refused.status == 401:
            raise SignInAgain(session.signed_out()) from refused
        message = N_("No such application.") if refused.status == 404 else None
        return page(request, session, "problem.html", status=refused.status, message=message, said=readable(refused))
    return page(
        request,
        session,
        "application.html",
        status=status,
        a=application,
        statuses=APPLICATION_STATUSES,
        errors=errors or {},
        typed=typed or {},
    )


@router.get("/applications/{application_id}", response_class=HTMLResponse, summary="An application (申请)")
async def application(request: Request, session: PersonDep, application_id: str) -> Response:
    return await application_page(request, session, application_id)


def whole_number(text: str) -> int | None:
    return int(text) if text.strip().isdigit() and len(text.strip()) <= 9 else None


@router.post("/applications/{application_id}/approve", summary="Approve, narrowed as the approver chose")
async def approve(
    request: Request,
    session: PersonDep,
    application_id: str,
    items: Annotated[list[str] | None, Form()] = None,
    valid_days: Annotated[str, Form()] = "",
    daily_quota: Annotated[str, Form()] = "",
) -> Response:
    items = items or []
    typed: dict[str, object] = {"items": items, "valid_days": valid_days, "daily_quota": daily_quota}
    errors: dict[str, str] = {}
    if not items:
        errors["items"] = N_("Keep at least one item.")
    days, quota = whole_number(valid_days), whole_number(daily_quota)
    if days is None:
        errors["valid_days"] = WHOLE_NUMBER
    if quota is None:
        errors["daily_quota"] = WHOLE_NUMBER
    path = application_path(application_id)
    if not errors and path is not None:
        body = {"items": items, "valid_days": days, "daily_quota": quota}
        try:
            await console_of(request).platform.post(session, f"{path}/approve", body)
        except ApiProblem as refused:
            if refused.status == 401:
                raise SignInAgain(session.signed_out()) from refused
            # The API's own words next to the fields it names; a rule of the whole (widening…) above the form.
            errors = {f: m for f, m in refused.fields.items() if f in typed} or {
                "approve": DECISION_PROBLEMS.get(refused.code, ""),
                "approve_detail": readable(refused),
            }
        else:
            return go(request, session, f"/console/applications/{application_id}")
    return await application_page(request, session, application_id, status=400, errors=errors, typed=typed)


@router.post("/applications/{application_id}/reject", summary="Reject, with a reason")
async def reject(
    request: Request, session: PersonDep, application_id: str, reason: Annotated[str, Form()] = ""
) -> Response:
    typed: dict[str, object] = {"reason": reason}
    errors: dict[str, str] = {}
    if len(reason.strip()) < 2:
        errors["reason"] = N_("Give the reason for the rejection (at least 2 characters).")
    elif len(reason) > 1000:
        errors["reason"] = N_("A reason has at most 1000 characters.")
    path = application_path(application_id)
    if not errors and path is not None:
        try:
            await console_of(request).platform.post(session, f"{path}/reject", {"reason": reason.strip()})
        except ApiProblem as refused:
            if refused.status == 401:
                raise SignInAgain(session.signed_out()) from refused
            errors = {"reason": refused.fields.get("reason") or readable(refused)}
        else:
            return go(request, session, f"/console/applications/{application_id}")
    return await application_page(request, session, application_id, status=400, errors=errors, typed=typed)


def sign_in_again(request: Request, err: SignInAgain) -> Response:
    return go(request, err.session, "/console/login?notice=expired" if err.expired else "/console/login")


def refused(request: Request, err: Refused) -> Response:
    console = console_of(request)
    session = console.sealer.open(request.cookies.get(COOKIE)) or Session()
    return page(request, session, "refused.html", status=err.status, message=err.message)

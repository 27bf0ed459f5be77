"""Everyone's pages: login (errors next to the field), logout, the language switch (journey 5)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api.common import HOME, SessionDep, console_of, go, local_path, page, page_router
from services.console.i18n import N_
from services.console.platform import UNREACHABLE, ApiProblem
from services.console.session import LANGUAGES

# The gateway's own limits (services/gateway/schemas.py: Login).
USERNAME_MAX, PASSWORD_MAX = 64, 128

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

router = page_router()


@router.get("", summary="The console: the first page of a person's roles, or login")
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

"""The platform administrator's pages (journey 3, 平台管理): people's accounts (created, re-roled,
disabled or enabled, unlocked), departments, systems (a new one's secret shown once; its JWKS
registered; disabled or enabled) and the rotation of the token-signing key.

The gateway owns every one of these (``services/gateway/api.py``) and decides who may do what: a
person who is not a platform administrator gets its refusal, in words. A system's secret is in the
gateway's answer to its creation only; this module puts it in the page answering that POST and
nowhere else — no cookie, no URL, no redirect, no log."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api.common import (
    PersonDep,
    api_get,
    api_refusal,
    api_send,
    form_fields,
    go,
    local_time,
    object_page,
    page,
    page_router,
    problem_page,
    readable,
    refusal_errors,
)
from services.console.i18n import N_
from services.console.platform import ApiProblem
from services.console.session import Session

router = page_router()

# Usernames and client ids as the gateway makes them (schemas.Username; "sys-" + hex): anything
# else in a URL is no account of the platform's, and never goes into an API path.
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

PERSON_ROLES = {
    "platform_admin": N_("Platform administrator"),
    "data_admin": N_("Data administrator"),
    "approver": N_("Approver"),
    "auditor": N_("Auditor"),
}
SYSTEM_ROLES = {
    "consumer": N_("Consumer (uses data)"),
    "provider": N_("Provider (offers data)"),
    "citizen_portal": N_("Citizen portal"),
}
AUTH_METHODS = {
    "client_secret_basic": N_("Client secret"),
    "private_key_jwt": N_("Public keys (JWKS)"),
}
LEVELS = {
    "national": N_("National"),
    "province": N_("Province"),
    "city": N_("City"),
    "county": N_("County"),
}
ACCOUNT_STATUSES = {"active": N_("Active"), "disabled": N_("Disabled")}
KEY_STATES = {
    "next": N_("Next (published, not signing yet)"),
    "current": N_("Current (signing)"),
    "previous": N_("Previous (published until its tokens expire)"),
}
# What a page may say on arrival (?done=…), after the change it names.
DONE = {
    "created": N_("The account has been created."),
    "roles": N_("The roles have been changed. The person's next login carries them."),
    "disabled": N_("Disabled. No new login or token is given until it is enabled again."),
    "enabled": N_("Enabled."),
    "unlocked": N_("Unlocked. The person can log in again."),
    "jwks": N_("The public keys have been registered."),
    "rotated": N_("The signing key has been rotated."),
    "secret-revoked": N_("The secret has been revoked: it no longer gets tokens."),
    "system-unlocked": N_("Unlocked. The system can get tokens again."),
    "department-disabled": N_(
        "Disabled: none of its people can log in and none of its systems gets a token until it is enabled again."
    ),
    "department-enabled": N_("Enabled: its active people and systems can log in and get tokens again."),
    "rate-limit": N_("The system's rate limit has been set. It applies from the system's next request."),
    "rate-limit-default": N_("The system is back on the platform's default rate limit."),
}
# The gateway's problems (services/gateway/problems.py and the common ones) in the person's
# language; the API's own title and detail follow in its words.
PROBLEMS = {
    "forbidden": N_("Only a platform administrator may do this."),
    "not-found": N_("Not found."),
    "department-exists": N_("A department with this code is already registered."),
    "unknown-parent": N_("There is no such parent department."),
    "user-exists": N_("This username is taken."),
    "cannot-disable-self": N_("You cannot disable yourself or your own department."),
    "wrong-auth-method": N_("This system uses a client secret, not public keys."),
    "invalid-jwks-uri": N_("This JWKS address cannot be used (it must be https, on an allowed host)."),
    "rotation-too-soon": N_(
        "Too soon: tokens signed by the previous key may still be valid. Rotate again once they have expired."
    ),
    "validation": N_("The platform did not accept this. Check the fields."),
    "too-many-secrets": N_("The system already has two active secrets: revoke the old one first."),
    "last-secret": N_("This is the system's only secret: add a new one first, or disable the system."),
}
REQUIRED = N_("This field is required.")
CHOOSE_ROLE = N_("Choose at least one role.")
# The gateway's field checks (services/gateway/schemas.py), said for people next to each field.
FIELD_PROBLEMS = {
    "code": N_("Enter a valid unified social credit code (18 characters, in its own region)."),
    "name": N_("A name has 2 to 100 characters."),
    "region_code": N_("Enter a current 6-digit administrative division code."),
    "level": N_("Choose a level."),
    "parent_code": N_("Enter a valid unified social credit code, or leave it empty."),
    "username": N_("3 to 64 letters, digits, '.', '_' or '-'; not starting with 'sys-'."),
    "password": N_(
        "At least 12 characters, with 3 of: lower case, upper case, digits, symbols; not containing the username."
    ),
    "department": N_("Choose a department."),
    "roles": CHOOSE_ROLE,
    "jwks": N_('Paste a JWKS: {"keys": [...]}, 1 to 10 public keys, each with a kid (EC, OKP, or RSA of 2048 bits).'),
    "jwks_uri": N_("Enter the https address of the system's JWKS."),
    "rate_per_s": N_("Requests a second: a number above 0, at most 1000000."),
    "burst": N_("Burst: a whole number from 1 to 10000000."),
}


def api_errors(refused: ApiProblem, fields: Iterable[str] = (), whole: str | None = None) -> dict[str, str]:
    """The gateway's refusal as a form's errors (``refusal_errors``): next to each of ``fields``
    it names, our sentence (``FIELD_PROBLEMS``) then its own words; a check of the whole body
    next to the field ``whole``; anything else above the form."""
    named = form_fields(fields) | ({"": whole} if whole else {})
    return refusal_errors(refused, named, PROBLEMS, sentences=FIELD_PROBLEMS)


def context(**more: object) -> dict[str, Any]:
    """What every administration template is given besides its own: the names of roles, states…"""
    return {
        "person_roles": PERSON_ROLES,
        "system_roles": SYSTEM_ROLES,
        "auth_methods": AUTH_METHODS,
        "levels": LEVELS,
        "statuses": ACCOUNT_STATUSES,
        "key_states": KEY_STATES,
    } | more


# Our words for a page the API would not give (a person who is no platform administrator).
MISSING = {code: PROBLEMS[code] for code in ("forbidden", "not-found")}


def refusal_page(request: Request, session: Session, refused: ApiProblem) -> Response:
    """A page the API would not give: why, in words."""
    return problem_page(request, session, refused, MISSING.get(refused.code))


async def departments_of(request: Request, session: Session) -> list[dict[str, Any]]:
    """The departments (one page of 500: the forms' choice of department)."""
    answer = await api_get(request, session, "/v1/departments", {"limit": "500"})
    return list(answer["items"])


def done_notice(done: str | None) -> str | None:
    return DONE.get(done or "")


# --------------------------------------------------------------------------- people (人员账号)


async def users_page(
    request: Request,
    session: Session,
    *,
    cursor: str | None = None,
    done: str | None = None,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, object] | None = None,
) -> Response:
    params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
    try:
        users = await api_get(request, session, "/v1/users", params)
        departments = await departments_of(request, session)
    except ApiProblem as refused:
        return refusal_page(request, session, refused)
    return page(
        request,
        session,
        "admin_users.html",
        status=status,
        **context(
            users=users,
            departments=departments,
            names={d["code"]: d["name"] for d in departments},
            notice=done_notice(done),
            errors=errors or {},
            typed=typed or {},
        ),
    )


@router.get(
    "/admin", response_class=HTMLResponse, summary="People's accounts (人员账号): the administration's first page"
)
async def users(request: Request, session: PersonDep, cursor: str | None = None, done: str | None = None) -> Response:
    return await users_page(request, session, cursor=cursor, done=done)


@router.post("/admin/users", response_class=HTMLResponse, summary="Create a person's account")
async def create_user(
    request: Request,
    session: PersonDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    department: Annotated[str, Form()] = "",
    roles: Annotated[list[str] | None, Form()] = None,
) -> Response:
    username, roles = username.strip(), roles or []
    # What was typed comes back, except the password (never echoed into a page).
    typed: dict[str, object] = {"username": username, "department": department, "roles": roles}
    errors = {
        f: REQUIRED for f, v in (("username", username), ("password", password), ("department", department)) if not v
    }
    if not roles:
        errors["roles"] = CHOOSE_ROLE
    if not errors:
        body = {"username": username, "password": password, "department": department, "roles": roles}
        refused = await api_refusal(request, session, "POST", "/v1/users", body)
        if refused is None:
            return go(request, session, f"/console/admin/users/{quote(username)}?done=created")
        # UserCreate's one check of the whole body is the password policy (密码策略).
        errors = api_errors(refused, [*typed, "password"], whole="password")
        if refused.code == "user-exists":
            errors = {"username": PROBLEMS["user-exists"], "username_detail": readable(refused)}
    return await users_page(request, session, status=400, errors=errors, typed=typed)


def user_path(username: str) -> str | None:
    return f"/v1/users/{username}" if NAME.fullmatch(username) else None


async def user_page(
    request: Request,
    session: Session,
    username: str,
    *,
    done: str | None = None,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, object] | None = None,
) -> Response:
    return await object_page(
        request,
        session,
        user_path(username),
        "admin_user.html",
        name="u",
        what=f"user {username}",
        missing=MISSING,
        status=status,
        **context(notice=done_notice(done), errors=errors or {}, typed=typed or {}),
    )


@router.get("/admin/users/{username}", response_class=HTMLResponse, summary="A person's account")
async def user(request: Request, session: PersonDep, username: str, done: str | None = None) -> Response:
    return await user_page(request, session, username, done=done)


@router.post("/admin/users/{username}/roles", response_class=HTMLResponse, summary="Re-role a person")
async def user_roles(
    request: Request, session: PersonDep, username: str, roles: Annotated[list[str] | None, Form()] = None
) -> Response:
    roles = roles or []
    path = user_path(username)
    errors: dict[str, str] = {} if roles else {"roles": CHOOSE_ROLE}
    if not errors and path is not None:
        refused = await api_refusal(request, session, "PUT", f"{path}/roles", {"roles": roles})
        if refused is None:
            return go(request, session, f"/console/admin/users/{quote(username)}?done=roles")
        errors = api_errors(refused, ["roles"])
        if refused.code == "forbidden":  # a platform admin's own role (the API says so in its words)
            errors = {"roles": N_("The platform refused this change of roles."), "roles_detail": readable(refused)}
    return await user_page(request, session, username, status=400, errors=errors, typed={"roles": roles})


async def post(request: Request, session: Session, path: str | None) -> ApiProblem | None:
    """POST ``path`` (a disable, enable or unlock) as the person; the refusal, if refused."""
    if path is None:
        return ApiProblem(404, "not-found", "Not found", "")
    return await api_refusal(request, session, "POST", path)


STATUS_VERBS = {"disabled": "disable", "enabled": "enable"}


@router.post("/admin/users/{username}/status", response_class=HTMLResponse, summary="Disable or enable a person")
async def user_status(request: Request, session: PersonDep, username: str, to: Annotated[str, Form()] = "") -> Response:
    path, verb = user_path(username), STATUS_VERBS.get(to)
    refused = await post(request, session, f"{path}/{verb}" if path and verb else None)
    if refused is not None:
        return await user_page(request, session, username, status=refused.status, errors=api_errors(refused))
    return go(request, session, f"/console/admin/users/{quote(username)}?done={to}")


@router.post("/admin/users/{username}/unlock", response_class=HTMLResponse, summary="Unlock a locked-out person")
async def user_unlock(request: Request, session: PersonDep, username: str) -> Response:
    path = user_path(username)
    refused = await post(request, session, f"{path}/unlock" if path else None)
    if refused is not None:
        return await user_page(request, session, username, status=refused.status, errors=api_errors(refused))
    return go(request, session, f"/console/admin/users/{quote(username)}?done=unlocked")


# --------------------------------------------------------------------------- departments (部门)


async def departments_page(
    request: Request,
    session: Session,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, object] | None = None,
    done: str | None = None,
) -> Response:
    try:
        departments = await departments_of(request, session)
    except ApiProblem as refused:
        return refusal_page(request, session, refused)
    return page(
        request,
        session,
        "admin_departments.html",
        status=status,
        **context(
            departments=departments,
            notice=N_("The department has been registered.") if done == "created" else None,
            errors=errors or {},
            typed=typed or {},
        ),
    )


@router.get("/admin/departments", response_class=HTMLResponse, summary="Departments (部门)")
async def departments(request: Request, session: PersonDep, done: str | None = None) -> Response:
    return await departments_page(request, session, done=done)


@router.post("/admin/departments", response_class=HTMLResponse, summary="Register a department")
async def create_department(
    request: Request,
    session: PersonDep,
    code: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    region_code: Annotated[str, Form()] = "",
    level: Annotated[str, Form()] = "",
    parent_code: Annotated[str, Form()] = "",
) -> Response:
    typed: dict[str, object] = {
        "code": code.strip().upper(),
        "name": name.strip(),
        "region_code": region_code.strip(),
        "level": level,
        "parent_code": parent_code.strip().upper(),
    }
    errors = {f: REQUIRED for f in ("code", "name", "region_code") if not typed[f]}
    if level not in LEVELS:
        errors["level"] = FIELD_PROBLEMS["level"]
    if not errors:
        body = typed | {"parent_code": typed["parent_code"] or None}
        refused = await api_refusal(request, session, "POST", "/v1/departments", body)
        if refused is None:
            return go(request, session, "/console/admin/departments?done=created")
        # DepartmentCreate's one check of the whole body: the region agrees with the code.
        errors = api_errors(refused, typed, whole="region_code")
        if refused.code == "department-exists":
            errors = {"code": PROBLEMS["department-exists"], "code_detail": readable(refused)}
        elif refused.code == "unknown-parent":
            errors = {"parent_code": PROBLEMS["unknown-parent"], "parent_code_detail": readable(refused)}
    return await departments_page(request, session, status=400, errors=errors, typed=typed)


def department_path(code: str) -> str | None:
    return f"/v1/departments/{code}" if NAME.fullmatch(code) else None


async def department_page(
    request: Request, session: Session, code: str, template: str, *, status: int = 200, **more: object
) -> Response:
    """A department (its page, or the confirmation of its disabling)."""
    shown = context(**({"errors": {}, "notice": None} | more))
    return await object_page(
        request,
        session,
        department_path(code),
        template,
        name="d",
        what=f"department {code}",
        missing=MISSING,
        status=status,
        **shown,
    )


@router.get("/admin/departments/{code}", response_class=HTMLResponse, summary="A department (部门)")
async def department(request: Request, session: PersonDep, code: str, done: str | None = None) -> Response:
    shown = done if done in ("department-disabled", "department-enabled") else None
    return await department_page(request, session, code, "admin_department.html", notice=done_notice(shown))


@router.get(
    "/admin/departments/{code}/disable", response_class=HTMLResponse, summary="Confirm the disabling of a department"
)
async def confirm_department_disable(request: Request, session: PersonDep, code: str) -> Response:
    return await department_page(request, session, code, "admin_department_disable.html")


@router.post("/admin/departments/{code}/status", response_class=HTMLResponse, summary="Disable or enable a department")
async def department_status(
    request: Request, session: PersonDep, code: str, to: Annotated[str, Form()] = ""
) -> Response:
    path, verb = department_path(code), STATUS_VERBS.get(to)
    refused = await post(request, session, f"{path}/{verb}" if path and verb else None)
    if refused is not None:
        # A disabling refused (one's own department…) is said on its confirmation; an enabling, on the page.
        template = "admin_department_disable.html" if to == "disabled" else "admin_department.html"
        return await department_page(
            request, session, code, template, status=refused.status, errors=api_errors(refused)
        )
    return go(request, session, f"/console/admin/departments/{quote(code)}?done=department-{to}")


# --------------------------------------------------------------------------- systems (业务系统)


async def systems_page(
    request: Request,
    session: Session,
    *,
    cursor: str | None = None,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, object] | None = None,
) -> Response:
    params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
    try:
        systems = await api_get(request, session, "/v1/systems", params)
        departments = await departments_of(request, session)
    except ApiProblem as refused:
        return refusal_page(request, session, refused)
    return page(
        request,
        session,
        "admin_systems.html",
        status=status,
        **context(
            systems=systems,
            departments=departments,
            names={d["code"]: d["name"] for d in departments},
            errors=errors or {},
            typed=typed or {"auth_method": "client_secret_basic"},
        ),
    )


@router.get("/admin/systems", response_class=HTMLResponse, summary="Systems (业务系统)")
async def systems(request: Request, session: PersonDep, cursor: str | None = None) -> Response:
    return await systems_page(request, session, cursor=cursor)


# Ten public keys (the gateway's most) take a few KB; more is no JWKS.
JWKS_MAX = 64 * 1024


def jwks_body(jwks: str, jwks_uri: str, errors: dict[str, str]) -> dict[str, object]:
    """The public keys as the gateway takes them: a JWKS pasted (JSON) or its https address, one of
    them; what is wrong goes into ``errors`` next to its field."""
    jwks, jwks_uri = jwks.strip(), jwks_uri.strip()
    if bool(jwks) == bool(jwks_uri):
        errors["jwks"] = N_("Paste the JWKS, or give its address: one of the two.")
        return {}
    if jwks_uri:
        return {"jwks_uri": jwks_uri}
    if len(jwks) > JWKS_MAX:
        errors["jwks"] = N_("A JWKS of at most 64 KB, please: ten public keys fit in far less.")
        return {}
    try:
        parsed = json.loads(jwks)
    except (ValueError, RecursionError):  # whatever is pasted: said next to the field, never a 500
        parsed = None
    if not isinstance(parsed, dict):
        errors["jwks"] = N_("This is not a JSON object. Paste the whole JWKS.")
        return {}
    return {"jwks": parsed}


@router.post("/admin/systems", response_class=HTMLResponse, summary="Register a system; its secret is shown once")
async def create_system(
    request: Request,
    session: PersonDep,
    department: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    roles: Annotated[list[str] | None, Form()] = None,
    auth_method: Annotated[str, Form()] = "client_secret_basic",
    jwks: Annotated[str, Form()] = "",
    jwks_uri: Annotated[str, Form()] = "",
) -> Response:
    roles = roles or []
    typed: dict[str, object] = {
        "department": department,
        "name": name.strip(),
        "roles": roles,
        "auth_method": auth_method,
        "jwks": jwks,
        "jwks_uri": jwks_uri.strip(),
    }
    errors = {f: REQUIRED for f in ("department", "name") if not typed[f]}
    if not roles:
        errors["roles"] = CHOOSE_ROLE
    body: dict[str, object] = {"name": typed["name"], "roles": roles, "auth_method": auth_method}
    if auth_method == "private_key_jwt":
        body |= jwks_body(jwks, jwks_uri, errors)
    elif auth_method != "client_secret_basic":
        errors["auth_method"] = N_("Choose how the system authenticates.")
    if not errors:
        try:
            created = await api_send(
                request, session, "POST", f"/v1/departments/{quote(department, safe='')}/systems", body
            )
        except ApiProblem as refused:
            errors = api_errors(refused, typed, whole="jwks")  # keys that go with the method, one source
            if refused.code == "invalid-jwks-uri":
                errors = {"jwks_uri": PROBLEMS["invalid-jwks-uri"], "jwks_uri_detail": readable(refused)}
        else:
            # The secret is in this answer and nowhere else: the page is no-store (app.PageHeaders).
            return page(request, session, "admin_system_created.html", status=201, **context(s=created))
    return await systems_page(request, session, status=400, errors=errors, typed=typed)


def system_path(client_id: str) -> str | None:
    return f"/v1/systems/{client_id}" if NAME.fullmatch(client_id) else None


async def system_page(
    request: Request,
    session: Session,
    client_id: str,
    *,
    done: str | None = None,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, object] | None = None,
) -> Response:
    path = system_path(client_id)

    async def keys_of(system: dict[str, Any]) -> dict[str, object]:
        """Its registered public keys, for a system that authenticates with them; its client
        secrets (their ids and dates, never the secrets), for one that uses a secret."""
        with_keys = system["auth_method"] == "private_key_jwt"
        keys = await api_get(request, session, f"{path}/jwks") if with_keys else None
        registered = json.dumps(keys["jwks"], ensure_ascii=False, indent=2) if keys and keys.get("jwks") else None
        secrets = None if with_keys else (await api_get(request, session, f"{path}/secrets"))["items"]
        limit = await api_get(request, session, f"{path}/rate-limit")
        locked = local_time(system["locked_until"], request) if system.get("locked_until") else None
        return {
            "keys": keys,
            "registered": registered,
            "secrets": secrets,
            "limit": limit | shown_limit(limit),
            "locked": locked,
        }

    return await object_page(
        request,
        session,
        path,
        "admin_system.html",
        name="s",
        what=f"system {client_id}",
        missing=MISSING,
        status=status,
        more=keys_of,
        **context(notice=done_notice(done), errors=errors or {}, typed=typed or {}),
    )


@router.get("/admin/systems/{client_id}", response_class=HTMLResponse, summary="A system (业务系统)")
async def system(request: Request, session: PersonDep, client_id: str, done: str | None = None) -> Response:
    return await system_page(request, session, client_id, done=done)


@router.post("/admin/systems/{client_id}/status", response_class=HTMLResponse, summary="Disable or enable a system")
async def system_status(
    request: Request, session: PersonDep, client_id: str, to: Annotated[str, Form()] = ""
) -> Response:
    path, verb = system_path(client_id), STATUS_VERBS.get(to)
    refused = await post(request, session, f"{path}/{verb}" if path and verb else None)
    if refused is not None:
        return await system_page(request, session, client_id, status=refused.status, errors=api_errors(refused))
    return go(request, session, f"/console/admin/systems/{quote(client_id)}?done={to}")


@router.post("/admin/systems/{client_id}/unlock", response_class=HTMLResponse, summary="Unlock a locked-out system")
async def system_unlock(request: Request, session: PersonDep, client_id: str) -> Response:
    path = system_path(client_id)
    refused = await post(request, session, f"{path}/unlock" if path else None)
    if refused is not None:
        return await system_page(request, session, client_id, status=refused.status, errors=api_errors(refused))
    return go(request, session, f"/console/admin/systems/{quote(client_id)}?done=system-unlocked")


@router.post("/admin/systems/{client_id}/jwks", response_class=HTMLResponse, summary="Register a system's JWKS")
async def system_jwks(
    request: Request,
    session: PersonDep,
    client_id: str,
    jwks: Annotated[str, Form()] = "",
    jwks_uri: Annotated[str, Form()] = "",
) -> Response:
    typed: dict[str, object] = {"jwks": jwks, "jwks_uri": jwks_uri.strip()}
    errors: dict[str, str] = {}
    body = jwks_body(jwks, jwks_uri, errors)
    path = system_path(client_id)
    if not errors and path is not None:
        refused = await api_refusal(request, session, "PUT", f"{path}/jwks", body)
        if refused is None:
            return go(request, session, f"/console/admin/systems/{quote(client_id)}?done=jwks")
        errors = api_errors(refused, typed, whole="jwks")  # keys that go with the method, one source
        if refused.code == "invalid-jwks-uri":
            errors = {"jwks_uri": PROBLEMS["invalid-jwks-uri"], "jwks_uri_detail": readable(refused)}
    return await system_page(request, session, client_id, status=400, errors=errors, typed=typed)


# --------------------------------------------------------------------------- rate limits (限流)


def plain(number: float) -> str:
    """A number as people write it: 200, 0.5, 1000000 (never 2e+02)."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def shown_limit(limit: dict[str, Any]) -> dict[str, str]:
    return {"rate_shown": plain(limit["rate_per_s"]), "burst_shown": str(limit["burst"])}


def limit_body(rate_per_s: str, burst: str, errors: dict[str, str]) -> dict[str, object]:
    """The numbers as the gateway takes them; text that is no number is said next to its field
    (the range is the gateway's to check: its refusal is said there too)."""
    body: dict[str, object] = {}
    for name, text, kind in (("rate_per_s", rate_per_s, float), ("burst", burst, int)):
        if not text.strip():
            errors[name] = REQUIRED
            continue
        try:
            value = kind(text.strip())
            number = math.isfinite(value)  # no inf or nan (JSON has none); a huge int overflows here
        except (ValueError, OverflowError):
            number = False
        if number:
            body[name] = value
        else:
            errors[name] = FIELD_PROBLEMS[name]
    return body


@router.post("/admin/systems/{client_id}/rate-limit", response_class=HTMLResponse, summary="Set a system's rate limit")
async def system_rate_limit(
    request: Request,
    session: PersonDep,
    client_id: str,
    rate_per_s: Annotated[str, Form()] = "",
    burst: Annotated[str, Form()] = "",
) -> Response:
    typed: dict[str, object] = {"rate_per_s": rate_per_s.strip(), "burst": burst.strip()}
    errors: dict[str, str] = {}
    body = limit_body(rate_per_s, burst, errors)
    path = system_path(client_id)
    if not errors and path is not None:
        refused = await api_refusal(request, session, "PUT", f"{path}/rate-limit", body)
        if refused is None:
            return go(request, session, f"/console/admin/systems/{quote(client_id)}?done=rate-limit")
        errors = api_errors(refused, typed)
    return await system_page(request, session, client_id, status=400, errors=errors, typed=typed)


@router.post(
    "/admin/systems/{client_id}/rate-limit/default",
    response_class=HTMLResponse,
    summary="Put a system back on the default rate limit",
)
async def system_rate_limit_default(request: Request, session: PersonDep, client_id: str) -> Response:
    path = system_path(client_id)
    refused = await api_refusal(request, session, "DELETE", f"{path}/rate-limit") if path else None
    if path is None or refused is not None:
        errors = api_errors(refused) if refused else {}
        return await system_page(request, session, client_id, status=refused.status if refused else 404, errors=errors)
    return go(request, session, f"/console/admin/systems/{quote(client_id)}?done=rate-limit-default")


# --------------------------------------------------------------------------- client secrets (密钥轮换)


@router.post(
    "/admin/systems/{client_id}/secrets", response_class=HTMLResponse, summary="Add a client secret; shown once"
)
async def add_secret(request: Request, session: PersonDep, client_id: str) -> Response:
    """Secret rotation (密钥轮换), step one: a second secret beside the current one. As at a
    system's creation, the new secret is in the page answering this POST and nowhere else."""
    path = system_path(client_id)
    if path is None:
        return await system_page(request, session, client_id)
    try:
        added = await api_send(request, session, "POST", f"{path}/secrets")
        system = await api_get(request, session, path)
    except ApiProblem as refused:
        return await system_page(request, session, client_id, status=refused.status, errors=api_errors(refused))
    # The page is no-store (app.PageHeaders); admin.js replaces its address with the system's.
    return page(request, session, "admin_secret_added.html", status=201, **context(s=system, added=added))


def secret_path(client_id: str, secret_id: str) -> str | None:
    path = system_path(client_id)
    return f"{path}/secrets/{secret_id}" if path is not None and NAME.fullmatch(secret_id) else None


@router.get(
    "/admin/systems/{client_id}/secrets/{secret_id}/revoke",
    response_class=HTMLResponse,
    summary="Confirm the revocation of a client secret",
)
async def confirm_revoke(request: Request, session: PersonDep, client_id: str, secret_id: str) -> Response:
    return await revoke_page(request, session, client_id, secret_id)


async def revoke_page(
    request: Request, session: Session, client_id: str, secret_id: str, *, status: int = 200, **more: object
) -> Response:
    """The confirmation of a secret's revocation: the system, and the secret (of its active ones)."""
    path = system_path(client_id) if secret_path(client_id, secret_id) else None

    async def secret_of(system: dict[str, Any]) -> dict[str, object]:
        active = (await api_get(request, session, f"{path}/secrets"))["items"]
        secret = next((s for s in active if s["id"] == secret_id), None)
        if secret is None:
            raise ApiProblem(404, "not-found", "Not found", f"secret {secret_id}")
        return {"secret": secret}

    return await object_page(
        request,
        session,
        path,
        "admin_secret_revoke.html",
        name="s",
        what=f"secret {secret_id}",
        missing=MISSING,
        status=status,
        more=secret_of,
        **context(**({"errors": {}} | more)),
    )


@router.post(
    "/admin/systems/{client_id}/secrets/{secret_id}/revoke",
    response_class=HTMLResponse,
    summary="Revoke a client secret; it stops working at once",
)
async def revoke_secret(request: Request, session: PersonDep, client_id: str, secret_id: str) -> Response:
    """Secret rotation, step two: the old secret stops working at once (the gateway keeps the last)."""
    path = secret_path(client_id, secret_id)
    refused = await api_refusal(request, session, "DELETE", path) if path else ApiProblem(404, "not-found", "", "")
    if refused is not None:
        errors = api_errors(refused)
        return await revoke_page(request, session, client_id, secret_id, status=refused.status, errors=errors)
    return go(request, session, f"/console/admin/systems/{quote(client_id)}?done=secret-revoked")


# --------------------------------------------------------------------------- signing keys (签名密钥)


async def keys_page(
    request: Request, session: Session, template: str, *, status: int = 200, **more: object
) -> Response:
    try:
        ring = await api_get(request, session, "/v1/keys")
    except ApiProblem as refused:
        return refusal_page(request, session, refused)
    current = [k["kid"] for k in ring["items"] if k["state"] == "current"]
    return page(request, session, template, status=status, **context(ring=ring, current=current, **more))


@router.get("/admin/keys", response_class=HTMLResponse, summary="The token-signing keys (签名密钥)")
async def signing_keys(request: Request, session: PersonDep, done: str | None = None) -> Response:
    return await keys_page(request, session, "admin_keys.html", notice=done_notice(done if done == "rotated" else None))


@router.get("/admin/keys/rotate", response_class=HTMLResponse, summary="Confirm a rotation of the signing key")
async def confirm_rotation(request: Request, session: PersonDep) -> Response:
    return await keys_page(request, session, "admin_keys_rotate.html", errors={})


@router.post("/admin/keys/rotate", response_class=HTMLResponse, summary="Rotate the signing key")
async def rotate(request: Request, session: PersonDep) -> Response:
    refused = await api_refusal(request, session, "POST", "/v1/keys/rotate")
    if refused is not None:
        return await keys_page(
            request, session, "admin_keys_rotate.html", status=refused.status, errors=api_errors(refused)
        )
    return go(request, session, "/console/admin/keys?done=rotated")

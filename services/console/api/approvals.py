"""The approver's pages (journey 2): the department's pending applications (待审批) with the working
days left, and an application approved narrowed or rejected with a reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from services.common.masking import MASKING_RULES
from services.console.api.common import (
    PersonDep,
    api_get,
    api_refusal,
    console_of,
    form_fields,
    go,
    local_time,
    object_page,
    page,
    page_router,
    readable,
    refusal_errors,
)
from services.console.i18n import N_
from services.console.platform import ApiProblem
from services.console.session import Session

router = page_router()


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
        queue = await api_get(request, session, "/v1/registry/applications", params)
    except ApiProblem as refused:
        problem = readable(refused)
    return page(request, session, "applications.html", queue=queue, problem=problem)


APPLICATION_STATUSES = {
    "pending": N_("Pending"),
    "approved": N_("Approved"),
    "rejected": N_("Rejected"),
    "refused": N_("Refused (not shared)"),
}
# A grant's state as the page says it: the registry's status, and "expired" once its validity ended.
GRANT_STATES = {"active": N_("In force"), "expired": N_("Expired"), "revoked": N_("Revoked")}
WHOLE_NUMBER = N_("Enter a whole number.")
# The masking rules (脱敏规则) an approval may choose per item, in words (services/common/masking.py).
MASKING_CHOICES = {
    "id_card": N_("ID card number: first 6 and last 4 shown"),
    "mobile": N_("Mobile number: first 3 and last 4 shown"),
    "name": N_("Name: only the surname shown"),
    "full": N_("Hidden entirely"),
}
assert set(MASKING_CHOICES) == set(MASKING_RULES)
MASKING_FIELD = "masking:"  # one select per item: "masking:<item name>"
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

    async def decision(application: dict[str, Any]) -> dict[str, object]:
        return {
            "defaults": await catalogue_masking(request, session, application),
            "grant": await grant_of(request, session, application),
        }

    return await object_page(
        request,
        session,
        application_path(application_id),
        "application.html",
        name="a",
        what=f"application {application_id}",
        missing={"not-found": N_("No such application.")},
        status=status,
        more=decision,
        statuses=APPLICATION_STATUSES,
        grant_states=GRANT_STATES,
        errors=errors or {},
        typed=typed or {},
        masking_choices=MASKING_CHOICES,
        zone=console_of(request).settings.timezone,
    )


async def catalogue_masking(request: Request, session: Session, application: dict[str, Any]) -> dict[str, str]:
    """The catalogue's own masking rule of each item (what a grant takes when the approver chooses
    none), shown in the approve form; none known while the application is decided or the entry unreadable."""
    if application.get("status") != "pending":
        return {}
    try:
        entry = await api_get(
            request, session, f"/v1/registry/resources/{quote(str(application['resource']), safe='/')}"
        )
    except ApiProblem:
        return {}
    return {str(i["name"]): str(i["masking"]) for i in entry.get("items", []) if i.get("masking")}


async def grant_of(request: Request, session: Session, application: dict[str, Any]) -> dict[str, Any] | None:
    """The grant (授权) an approved application made — its terms as approved, narrowed or not, and
    whether it still holds — or None (none yet, or unreadable: the page says so)."""
    if not application.get("grant_id"):
        return None
    try:
        grant: dict[str, Any] = await api_get(
            request, session, f"/v1/registry/grants/{uuid.UUID(str(application['grant_id']))}"
        )
    except ApiProblem:
        return None
    until = datetime.fromisoformat(str(grant["valid_until"]))
    grant["until"] = local_time(grant["valid_until"], request)
    grant["state"] = "expired" if grant["status"] == "active" and until <= datetime.now(UTC) else grant["status"]
    return grant


@router.get("/applications/{application_id}", response_class=HTMLResponse, summary="An application (申请)")
async def application(request: Request, session: PersonDep, application_id: str) -> Response:
    return await application_page(request, session, application_id)


def whole_number(text: str) -> int | None:
    return int(text) if text.strip().isdigit() and len(text.strip()) <= 9 else None


def until_instant(request: Request, text: str) -> datetime | None:
    """A ``datetime-local`` field ("2027-03-01T18:00") as an instant on the platform's clock
    (北京时间 by default, ``TONGBAN_TIMEZONE``); None when it is not one."""
    try:
        local = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if local.tzinfo is not None:
        return None
    return local.replace(tzinfo=console_of(request).settings.zone)


@router.post("/applications/{application_id}/approve", summary="Approve, narrowed as the approver chose")
async def approve(
    request: Request,
    session: PersonDep,
    application_id: str,
    items: Annotated[list[str] | None, Form()] = None,
    valid_by: Annotated[str, Form()] = "days",
    valid_days: Annotated[str, Form()] = "",
    valid_until: Annotated[str, Form()] = "",
    daily_quota: Annotated[str, Form()] = "",
) -> Response:
    """The approval (批准) as the approver narrowed it: items kept, validity in days or up to an
    instant (one of them, as the API takes), daily quota, and a masking rule (脱敏) per item where
    the catalogue's own is not what this grant should have."""
    items = items or []
    form = await request.form()
    masking = {
        str(key)[len(MASKING_FIELD) :]: str(value)
        for key, value in form.multi_items()
        if str(key).startswith(MASKING_FIELD) and value
    }
    typed: dict[str, object] = {
        "items": items,
        "valid_by": valid_by,
        "valid_days": valid_days,
        "valid_until": valid_until,
        "daily_quota": daily_quota,
        "masking": masking,
    }
    errors: dict[str, str] = {}
    if not items:
        errors["items"] = N_("Keep at least one item.")
    for item, rule in masking.items():
        if rule not in MASKING_CHOICES:
            errors[MASKING_FIELD + item] = N_("Choose one of the masking rules offered.")
    body: dict[str, object] = {"items": items}
    if valid_by == "until":
        until = until_instant(request, valid_until)
        if until is None:
            errors["valid_until"] = N_("Enter a date and time.")
        elif until <= datetime.now(until.tzinfo):
            errors["valid_until"] = N_("The end of validity must be in the future.")
        else:
            body["valid_until"] = until.isoformat()
    elif (days := whole_number(valid_days)) is None:
        errors["valid_days"] = WHOLE_NUMBER
    else:
        body["valid_days"] = days
    if (quota := whole_number(daily_quota)) is None:
        errors["daily_quota"] = WHOLE_NUMBER
    body["daily_quota"] = quota
    # A rule for an item not granted would be refused (unknown-items): only the kept items' count.
    body["masking"] = {item: rule for item, rule in masking.items() if item in items}
    path = application_path(application_id)
    if not errors and path is not None:
        refused = await api_refusal(request, session, "POST", f"{path}/approve", body)
        if refused is None:
            return go(request, session, f"/console/applications/{application_id}")
        # The API's own words next to the fields it names; a rule of the whole (widening…) above the form.
        errors = refusal_errors(refused, form_fields(typed), DECISION_PROBLEMS, form="approve", otherwise="")
    return await application_page(request, session, application_id, status=400, errors=errors, typed=typed)


def reason_error(reason: str, missing: str) -> str | None:
    """Why ``reason`` cannot be a decision's reason (``missing``: none, or too short), or None."""
    if len(reason.strip()) < 2:
        return missing
    return N_("A reason has at most 1000 characters.") if len(reason) > 1000 else None


@router.post("/applications/{application_id}/reject", summary="Reject, with a reason")
async def reject(
    request: Request, session: PersonDep, application_id: str, reason: Annotated[str, Form()] = ""
) -> Response:
    typed: dict[str, object] = {"reason": reason}
    missing = N_("Give the reason for the rejection (at least 2 characters).")
    errors = {"reason": said} if (said := reason_error(reason, missing)) else {}
    path = application_path(application_id)
    if not errors and path is not None:
        refused = await api_refusal(request, session, "POST", f"{path}/reject", {"reason": reason.strip()})
        if refused is None:
            return go(request, session, f"/console/applications/{application_id}")
        errors = {"reason": refused.fields.get("reason") or readable(refused)}
    return await application_page(request, session, application_id, status=400, errors=errors, typed=typed)


@router.post("/applications/{application_id}/revoke", summary="Revoke the grant the application made, with a reason")
async def revoke(
    request: Request,
    session: PersonDep,
    application_id: str,
    grant_id: Annotated[str, Form()] = "",
    revoke_reason: Annotated[str, Form()] = "",
) -> Response:
    """撤销授权: the provider withdraws what it granted; the exchange refuses the consumer from then on."""
    typed: dict[str, object] = {"revoke_reason": revoke_reason}
    missing = N_("Give the reason for revoking (at least 2 characters).")
    errors = {"revoke_reason": said} if (said := reason_error(revoke_reason, missing)) else {}
    try:
        grant = f"/v1/registry/grants/{uuid.UUID(grant_id)}"
    except ValueError:
        errors.setdefault("revoke_reason", N_("This grant cannot be revoked here."))
    if not errors:
        refused = await api_refusal(request, session, "POST", f"{grant}/revoke", {"reason": revoke_reason.strip()})
        if refused is None:
            return go(request, session, f"/console/applications/{application_id}")
        errors = {"revoke_reason": refused.fields.get("reason") or readable(refused)}
    return await application_page(request, session, application_id, status=400, errors=errors, typed=typed)

"""The approver's pages (journey 2): the department's pending applications (待审批) with the working
days left, and an application approved narrowed or rejected with a reason."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api.common import PersonDep, api_get, api_send, go, page, page_router, readable
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
        application = await api_get(request, session, path)
    except ApiProblem as refused:
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
            await api_send(request, session, "POST", f"{path}/approve", body)
        except ApiProblem as refused:
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
            await api_send(request, session, "POST", f"{path}/reject", {"reason": reason.strip()})
        except ApiProblem as refused:
            errors = {"reason": refused.fields.get("reason") or readable(refused)}
        else:
            return go(request, session, f"/console/applications/{application_id}")
    return await application_page(request, session, application_id, status=400, errors=errors, typed=typed)

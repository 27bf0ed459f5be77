"""A consuming department's data administrator applies for a catalogue entry's data (共享申请) and
follows their department's applications — the other side of the approver's queue (journey 2)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api.approvals import APPLICATION_STATUSES, whole_number
from services.console.api.common import (
    PersonDep,
    api_get,
    api_send,
    go,
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

# The registry's bounds (services/registry/applications/schemas.py: ApplicationCreate).
VALID_DAYS, DAILY_QUOTA = (1, 1095), (1, 10_000_000)
DEFAULT_VALID_DAYS, DEFAULT_DAILY_QUOTA = "365", "1000"
CLIENT_ID_MAX, BASIS_MAX = 64, 500
# The registry's refusals of an application, in the person's language (its detail follows).
APPLY_PROBLEMS = {
    "not-shared": N_("This entry is not shared (不予共享)."),
    "negative-listed": N_("This entry is on the negative list (负面清单): it is not shared."),
    "resource-not-published": N_("This entry is not published yet."),
    "unknown-items": N_("Some items are not items of this entry."),
    "unknown-client": N_("There is no such system of your department."),
    "forbidden": N_("You may not apply with this system."),
    "not-found": N_("No such catalogue entry."),
}
# The API's field names → the form's.
API_FIELDS = {"purpose": "service_item", "client_id": "client_id", "items": "items", "valid_days": "valid_days"}


def in_range(text: str, bounds: tuple[int, int]) -> int | None:
    """A whole number within ``bounds`` as typed, or None."""
    number = whole_number(text)
    return number if number is not None and bounds[0] <= number <= bounds[1] else None


async def apply_page(
    request: Request,
    session: Session,
    resource: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, Any] | None = None,
) -> Response:
    """The form to apply for ``resource``'s items, with ``errors`` next to their fields."""
    try:
        entry = await api_get(request, session, f"/v1/registry/resources/{resource}")
    except ApiProblem as refused:
        message = N_("No such catalogue entry.") if refused.status in (404, 422) else None
        return problem_page(request, session, refused, message)
    try:
        answer = await api_get(request, session, "/v1/registry/service-items", {"dept": session.department})
        service_items = answer["items"]
    except ApiProblem:
        service_items = []  # the field still takes a typed code
    defaults = {"valid_days": DEFAULT_VALID_DAYS, "daily_quota": DEFAULT_DAILY_QUOTA, "items": []}
    return page(
        request,
        session,
        "apply.html",
        status=status,
        entry=entry,
        service_items=service_items,
        errors=errors or {},
        typed=defaults | (typed or {}),
    )


@router.get("/apply", response_class=HTMLResponse, summary="Apply for a catalogue entry's data (共享申请)")
async def apply_form(request: Request, session: PersonDep, resource: str = "") -> Response:
    if not resource or len(resource) > 40:
        return page(request, session, "problem.html", status=404, message=N_("No such catalogue entry."), said="")
    return await apply_page(request, session, resource)


@router.post("/apply", summary="File the application")
async def apply(
    request: Request,
    session: PersonDep,
    resource: Annotated[str, Form()] = "",
    client_id: Annotated[str, Form()] = "",
    items: Annotated[list[str] | None, Form()] = None,
    service_item: Annotated[str, Form()] = "",
    basis: Annotated[str, Form()] = "",
    valid_days: Annotated[str, Form()] = "",
    daily_quota: Annotated[str, Form()] = "",
) -> Response:
    items = items or []
    typed: dict[str, Any] = {
        "client_id": client_id,
        "items": items,
        "service_item": service_item,
        "basis": basis,
        "valid_days": valid_days,
        "daily_quota": daily_quota,
    }
    errors: dict[str, str] = {}
    if not client_id.strip():
        errors["client_id"] = N_("Enter the client_id of your department's system that will query.")
    elif len(client_id.strip()) > CLIENT_ID_MAX:
        errors["client_id"] = N_("A client_id has at most 64 characters.")
    if not items:
        errors["items"] = N_("Choose at least one item.")
    if not service_item.strip():
        errors["service_item"] = N_("Enter the service item (事项) the data is for.")
    if len(basis) > BASIS_MAX:
        errors["basis"] = N_("The legal basis has at most 500 characters.")
    days, quota = in_range(valid_days, VALID_DAYS), in_range(daily_quota, DAILY_QUOTA)
    if days is None:
        errors["valid_days"] = N_("Enter a whole number of days from 1 to 1095.")
    if quota is None:
        errors["daily_quota"] = N_("Enter a whole number from 1 to 10,000,000.")
    if not errors:
        body: dict[str, Any] = {
            "resource": resource,
            "client_id": client_id.strip(),
            "items": items,
            "purpose": {"service_item": service_item.strip()} | ({"basis": basis.strip()} if basis.strip() else {}),
            "valid_days": days,
            "daily_quota": quota,
        }
        try:
            filed = await api_send(request, session, "POST", "/v1/registry/applications", body)
        except ApiProblem as refused:
            errors = refusal_errors(refused, API_FIELDS, APPLY_PROBLEMS, form="apply", otherwise="")
        else:
            return go(request, session, f"/console/applications/{filed['id']}")
    return await apply_page(request, session, resource, status=400, errors=errors, typed=typed)


@router.get("/my-applications", response_class=HTMLResponse, summary="The department's own applications")
async def my_applications(request: Request, session: PersonDep, cursor: str | None = None) -> Response:
    """What the person's department has applied for, and where each application stands."""
    params = {"consumer": session.department, "limit": "50"} | ({"cursor": cursor} if cursor else {})
    listing: dict[str, Any] = {"items": [], "next_cursor": None}
    problem = None
    try:
        listing = await api_get(request, session, "/v1/registry/applications", params)
    except ApiProblem as refused:
        problem = readable(refused)
    return page(
        request, session, "my_applications.html", listing=listing, problem=problem, statuses=APPLICATION_STATUSES
    )

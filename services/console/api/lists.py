"""The data administrator's three lists (三清单, journey 1): the department's responsibility list
(责任清单) with its lines added and changed, the demand list (需求清单) — demands sent, and those
received accepted into the responsibility list or rejected — and the negative list (负面清单) with
its lines added and taken off. Every rule is the registry's: the console only says it in Chinese,
next to the field it concerns."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api.common import (
    PersonDep,
    api_get,
    api_refusal,
    form_fields,
    go,
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

LISTS = "/console/lists"
RESPONSIBILITY_STATUSES = {"planned": N_("Planned"), "fulfilled": N_("Fulfilled"), "overdue": N_("Overdue")}
DEMAND_STATUSES = {"pending": N_("Awaiting an answer"), "accepted": N_("Accepted"), "rejected": N_("Rejected")}
# What a responsibility line may promise (a refusal to share goes on the negative list instead).
PROMISED = {"conditional": N_("Shared on conditions"), "unconditional": N_("Shared without conditions")}
# The catalogue's own values, Chinese in the API too.
MODES = ("接口", "库表", "文件")
CYCLES = ("实时", "每日", "每周", "每月", "每季度", "每半年", "每年", "其他")
CREDIT_CODE = re.compile(r"^[0-9A-Z]{18}$")
SERVICE_ITEM_CODE = re.compile(r"^[0-9A-Za-z\-]{4,64}$")
OPTIONS = {
    "share_type": list(PROMISED.items()),
    "mode": [(mode, mode) for mode in MODES],
    "update_cycle": [(cycle, cycle) for cycle in CYCLES],
}
# The registry's refusals in the person's language; the API's own detail follows in its words.
LIST_PROBLEMS = {
    "forbidden": N_("Only the department's data administrator may change its lists."),
    "not-found": N_("Not found (it may belong to another department)."),
    "invalid-state": N_("This can no longer be changed: it is already fulfilled or answered."),
    "demand-to-self": N_("A demand goes to another department, not your own."),
    "unknown-items": N_("The resource has no such data item."),
    "already-listed": N_("This is already on the negative list."),
    "validation": N_("The platform refused some of the values."),
}

Errors = dict[str, str]
Typed = dict[str, str]


def items_of(text: str) -> list[str]:
    """Data items (信息项) typed one per line or separated by commas or 、."""
    return [part.strip() for part in re.split(r"[,，、;；\n]", text) if part.strip()]


NAME_LENGTH = N_("Enter 2 to 100 characters.")
BASIS_LENGTH = N_("Enter 2 to 500 characters.")
ITEM_LENGTH = N_("A data item has at most 50 characters.")


def check_text(
    errors: Errors, field: str, text: str, bounds: tuple[int, int], message: str, required: bool = True
) -> None:
    """Required (unless not ``required``) and, when given, of a length within ``bounds``."""
    if not text.strip():
        if required:
            errors[field] = N_("This field is required.")
    elif not bounds[0] <= len(text.strip()) <= bounds[1]:
        errors[field] = message


def check_items(errors: Errors, field: str, text: str) -> list[str]:
    items = items_of(text)
    if not items:
        errors[field] = N_("Name at least one data item.")
    elif len(set(items)) != len(items):
        errors[field] = N_("Name each data item once.")
    elif any(len(item) > 50 for item in items):
        errors[field] = ITEM_LENGTH
    return items


def check_date(errors: Errors, field: str, text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        errors[field] = N_("Enter a date (YYYY-MM-DD).")
        return None


def check_choice(errors: Errors, field: str, value: str, allowed: object) -> None:
    if value not in allowed:  # type: ignore[operator]
        errors[field] = N_("Choose one of the options.")


def refusal(
    refused: ApiProblem, prefix: str, typed: Iterable[str], problems: Mapping[str, str] = LIST_PROBLEMS
) -> Errors:
    """The API's refusal as the errors of a form of these pages, whose fields are named ``prefix``
    + the API's (``refusal_errors``): next to the fields, else above the form (``<prefix>form``)."""
    return refusal_errors(refused, form_fields(typed, prefix), problems, form=f"{prefix}form")


def uuid_or_none(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Listed:
    """One list as the API gives it: its rows (the API's first page of 500), whether there are more,
    or the API's refusal in words."""

    rows: list[Any]
    more: bool = False
    problem: str | None = None


async def listed(request: Request, session: Session, path: str, params: dict[str, str]) -> Listed:
    try:
        answer = await api_get(request, session, path, params | {"limit": "500"})
    except ApiProblem as refused:
        return Listed([], problem=readable(refused))
    return Listed(list(answer["items"]), more=answer.get("next_cursor") is not None)


async def lists_page(
    request: Request, session: Session, *, status: int = 200, errors: Errors | None = None, typed: Typed | None = None
) -> Response:
    """The three lists of the person's department, with the forms to add to each; ``errors`` next
    to their fields and ``typed`` what the person had entered (field names prefixed by form)."""
    dept = {"dept": session.department}
    responsibilities, demands, negative, own = await asyncio.gather(
        listed(request, session, "/v1/registry/responsibilities", dept),
        listed(request, session, "/v1/registry/demands", {}),
        listed(request, session, "/v1/registry/negative-list", dept),
        listed(request, session, "/v1/registry/resources", {"provider": session.department}),
    )
    return page(
        request,
        session,
        "lists.html",
        status=status,
        responsibilities=responsibilities,
        demands=demands,
        negative=negative,
        own_resources=own.rows,
        keeper="data_admin" in session.roles,  # the forms: only for whom the API would take them
        errors=errors or {},
        opened={field.split("_", 1)[0] for field in errors or {}},
        typed=typed or {},
        r_statuses=RESPONSIBILITY_STATUSES,
        d_statuses=DEMAND_STATUSES,
        promised=PROMISED,
        options=OPTIONS,
    )


@router.get("/lists", response_class=HTMLResponse, summary="The department's three lists (三清单)")
async def lists(request: Request, session: PersonDep) -> Response:
    return await lists_page(request, session)


# --------------------------------------------------------------------------- 责任清单


def responsibility_body(typed: Typed, errors: Errors, prefix: str) -> dict[str, Any]:
    """A responsibility line's fields as the API takes them, checked as a person would be told."""
    check_text(errors, f"{prefix}name", typed["name"], (2, 100), NAME_LENGTH)
    items = check_items(errors, f"{prefix}items", typed["items"])
    check_choice(errors, f"{prefix}share_type", typed["share_type"], PROMISED)
    check_choice(errors, f"{prefix}mode", typed["mode"], MODES)
    check_choice(errors, f"{prefix}update_cycle", typed["update_cycle"], CYCLES)
    due_by = check_date(errors, f"{prefix}due_by", typed["due_by"])
    return {
        "name": typed["name"].strip(),
        "items": items,
        "share_type": typed["share_type"],
        "mode": typed["mode"],
        "update_cycle": typed["update_cycle"],
        "due_by": due_by.isoformat() if due_by else None,
    }


ResponsibilityForm = tuple[str, str, str, str, str, str]


def responsibility_typed(form: ResponsibilityForm) -> Typed:
    name, items, share_type, mode, update_cycle, due_by = form
    return {
        "name": name,
        "items": items,
        "share_type": share_type,
        "mode": mode,
        "update_cycle": update_cycle,
        "due_by": due_by,
    }


@router.post("/lists/responsibilities", summary="Add a line to the department's 责任清单")
async def add_responsibility(
    request: Request,
    session: PersonDep,
    name: Annotated[str, Form()] = "",
    items: Annotated[str, Form()] = "",
    share_type: Annotated[str, Form()] = "conditional",
    mode: Annotated[str, Form()] = "接口",
    update_cycle: Annotated[str, Form()] = "每日",
    due_by: Annotated[str, Form()] = "",
) -> Response:
    fields = responsibility_typed((name, items, share_type, mode, update_cycle, due_by))
    errors: Errors = {}
    body = responsibility_body(fields, errors, "r_")
    typed = {f"r_{k}": v for k, v in fields.items()}
    if not errors:
        refused = await api_refusal(request, session, "POST", "/v1/registry/responsibilities", body)
        if refused is None:
            return go(request, session, f"{LISTS}#responsibilities")
        errors = refusal(refused, "r_", typed)
    return await lists_page(request, session, status=400, errors=errors, typed=typed)


async def responsibility_page(
    request: Request,
    session: Session,
    line_id: str,
    *,
    status: int = 200,
    errors: Errors | None = None,
    typed: Typed | None = None,
) -> Response:
    """A line of the 责任清单, with the form to change it while it is planned and the person's own."""
    return await object_page(
        request,
        session,
        f"/v1/registry/responsibilities/{line_id}" if uuid_or_none(line_id) is not None else None,
        "lists_responsibility.html",
        name="line",
        what=f"responsibility {line_id}",
        missing={"not-found": N_("No such line of the responsibility list.")},
        status=status,
        errors=errors or {},
        typed=typed or {},  # the form shows the line as it is where nothing was typed
        r_statuses=RESPONSIBILITY_STATUSES,
        promised=PROMISED,
        options=OPTIONS,
    )


@router.get(
    "/lists/responsibilities/{line_id}", response_class=HTMLResponse, summary="A line of the 责任清单 (and its form)"
)
async def responsibility(request: Request, session: PersonDep, line_id: str) -> Response:
    return await responsibility_page(request, session, line_id)


@router.post("/lists/responsibilities/{line_id}", summary="Change a planned line of the 责任清单")
async def change_responsibility(
    request: Request,
    session: PersonDep,
    line_id: str,
    name: Annotated[str, Form()] = "",
    items: Annotated[str, Form()] = "",
    share_type: Annotated[str, Form()] = "",
    mode: Annotated[str, Form()] = "",
    update_cycle: Annotated[str, Form()] = "",
    due_by: Annotated[str, Form()] = "",
) -> Response:
    fields = responsibility_typed((name, items, share_type, mode, update_cycle, due_by))
    errors: Errors = {}
    body = responsibility_body(fields, errors, "e_")
    typed = {f"e_{k}": v for k, v in fields.items()}
    if not errors and uuid_or_none(line_id) is not None:
        refused = await api_refusal(request, session, "PATCH", f"/v1/registry/responsibilities/{line_id}", body)
        if refused is None:
            return go(request, session, f"{LISTS}#responsibilities")
        errors = refusal(refused, "e_", typed)
    return await responsibility_page(request, session, line_id, status=400, errors=errors, typed=typed)


# --------------------------------------------------------------------------- 需求清单


@router.post("/lists/demands", summary="Ask another department for data (需求清单)")
async def add_demand(
    request: Request,
    session: PersonDep,
    provider: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    items: Annotated[str, Form()] = "",
    service_item: Annotated[str, Form()] = "",
    basis: Annotated[str, Form()] = "",
    update_cycle: Annotated[str, Form()] = "实时",
) -> Response:
    typed = {
        "d_provider": provider,
        "d_name": name,
        "d_items": items,
        "d_service_item": service_item,
        "d_basis": basis,
        "d_update_cycle": update_cycle,
    }
    errors: Errors = {}
    if not CREDIT_CODE.match(provider.strip()):
        errors["d_provider"] = N_("Enter the department's unified social credit code (18 characters).")
    check_text(errors, "d_name", name, (2, 100), NAME_LENGTH)
    wanted = check_items(errors, "d_items", items)
    if not SERVICE_ITEM_CODE.match(service_item.strip()):
        errors["d_service_item"] = N_("Enter the service item's code (4 to 64 letters, digits or hyphens).")
    check_text(errors, "d_basis", basis, (2, 500), BASIS_LENGTH)
    check_choice(errors, "d_update_cycle", update_cycle, CYCLES)
    if not errors:
        body = {
            "provider": provider.strip(),
            "name": name.strip(),
            "items": wanted,
            "service_item": service_item.strip(),
            "basis": basis.strip(),
            "update_cycle": update_cycle,
        }
        refused = await api_refusal(request, session, "POST", "/v1/registry/demands", body)
        if refused is None:
            return go(request, session, f"{LISTS}#demands")
        errors = refusal(refused, "d_", typed)
    return await lists_page(request, session, status=400, errors=errors, typed=typed)


async def demand_page(
    request: Request,
    session: Session,
    demand_id: str,
    *,
    status: int = 200,
    errors: Errors | None = None,
    typed: Typed | None = None,
) -> Response:
    """A demand sent or received; a received one, while it awaits an answer, with the forms to
    accept it (a line of the responsibility list, due by a date) or reject it (a reason)."""
    return await object_page(
        request,
        session,
        f"/v1/registry/demands/{demand_id}" if uuid_or_none(demand_id) is not None else None,
        "lists_demand.html",
        name="demand",
        what=f"demand {demand_id}",
        missing={"not-found": N_("No such demand.")},
        status=status,
        errors=errors or {},
        typed=typed or {},
        d_statuses=DEMAND_STATUSES,
        options=OPTIONS,
    )


@router.get("/lists/demands/{demand_id}", response_class=HTMLResponse, summary="A demand (需求)")
async def demand(request: Request, session: PersonDep, demand_id: str) -> Response:
    return await demand_page(request, session, demand_id)


@router.post("/lists/demands/{demand_id}/accept", summary="Accept a demand into the 责任清单")
async def accept_demand(
    request: Request,
    session: PersonDep,
    demand_id: str,
    due_by: Annotated[str, Form()] = "",
    share_type: Annotated[str, Form()] = "conditional",
    mode: Annotated[str, Form()] = "接口",
) -> Response:
    typed = {"a_due_by": due_by, "a_share_type": share_type, "a_mode": mode}
    errors: Errors = {}
    day = check_date(errors, "a_due_by", due_by)
    check_choice(errors, "a_share_type", share_type, PROMISED)
    check_choice(errors, "a_mode", mode, MODES)
    if not errors and day is not None and uuid_or_none(demand_id) is not None:
        body = {"due_by": day.isoformat(), "share_type": share_type, "mode": mode}
        refused = await api_refusal(request, session, "POST", f"/v1/registry/demands/{demand_id}/accept", body)
        if refused is None:
            return go(request, session, f"{LISTS}/demands/{demand_id}")
        errors = refusal(refused, "a_", typed)
    return await demand_page(request, session, demand_id, status=400, errors=errors, typed=typed)


@router.post("/lists/demands/{demand_id}/reject", summary="Reject a demand, with a reason")
async def reject_demand(
    request: Request, session: PersonDep, demand_id: str, reason: Annotated[str, Form()] = ""
) -> Response:
    typed = {"j_reason": reason}
    errors: Errors = {}
    if len(reason.strip()) < 2:
        errors["j_reason"] = N_("Give the reason for the rejection (at least 2 characters).")
    elif len(reason) > 1000:
        errors["j_reason"] = N_("A reason has at most 1000 characters.")
    if not errors and uuid_or_none(demand_id) is not None:
        refused = await api_refusal(
            request, session, "POST", f"/v1/registry/demands/{demand_id}/reject", {"reason": reason.strip()}
        )
        if refused is None:
            return go(request, session, f"{LISTS}/demands/{demand_id}")
        errors = refusal(refused, "j_", typed)
    return await demand_page(request, session, demand_id, status=400, errors=errors, typed=typed)


# --------------------------------------------------------------------------- 负面清单


@router.post("/lists/negative", summary="Put a resource, or one data item of it, on the 负面清单")
async def add_negative(
    request: Request,
    session: PersonDep,
    resource: Annotated[str, Form()] = "",
    item: Annotated[str, Form()] = "",
    basis: Annotated[str, Form()] = "",
) -> Response:
    typed = {"n_resource": resource, "n_item": item, "n_basis": basis}
    errors: Errors = {}
    check_text(errors, "n_resource", resource, (3, 40), N_("Enter a resource code (3 to 40 characters)."))
    check_text(errors, "n_item", item, (1, 50), ITEM_LENGTH, required=False)
    check_text(errors, "n_basis", basis, (2, 500), BASIS_LENGTH)
    if not errors:
        body = {"resource": resource.strip(), "item": item.strip() or None, "basis": basis.strip()}
        refused = await api_refusal(request, session, "POST", "/v1/registry/negative-list", body)
        if refused is None:
            return go(request, session, f"{LISTS}#negative")
        errors = refusal(refused, "n_", typed)
        if refused.code == "unknown-items":  # the item typed is not one of the resource's
            errors["n_item"] = LIST_PROBLEMS["unknown-items"]
    return await lists_page(request, session, status=400, errors=errors, typed=typed)


@router.post("/lists/negative/{line_id}/remove", summary="Take a line off the 负面清单")
async def remove_negative(request: Request, session: PersonDep, line_id: str) -> Response:
    if uuid_or_none(line_id) is None:
        refused: ApiProblem | None = ApiProblem(404, "not-found", "Not found", f"negative line {line_id}")
    else:
        refused = await api_refusal(request, session, "DELETE", f"/v1/registry/negative-list/{line_id}")
    if refused is None:
        return go(request, session, f"{LISTS}#negative")
    return await lists_page(request, session, status=400, errors=refusal(refused, "l_", ()))

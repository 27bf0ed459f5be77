"""The data administrator's service items (政务服务事项, journey 1): the department's items with
their 免提交 rate (the share of materials the applicant need not submit, because the exchange
fetches them), an item's materials (申请材料), and a government-issued material mapped to the
catalogue resource and data items that cover it — or unmapped — after which the rate is the
registry's new one. The console counts nothing itself: each figure is the registry's answer."""

from __future__ import annotations

import contextlib
import uuid
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import HTMLResponse, Response

from services.console.api.common import (
    PersonDep,
    api_get,
    api_refusal,
    api_send,
    go,
    object_page,
    page,
    page_router,
    problem_page,
    readable,
)
from services.console.api.lists import SERVICE_ITEM_CODE, check_items, check_text, refusal
from services.console.i18n import N_
from services.console.platform import ApiProblem
from services.console.session import Session

router = page_router()

ITEMS = "/console/service-items"
SOURCES = {
    "government": N_("Issued by a government department"),
    "applicant": N_("Provided by the applicant"),
    "intermediary": N_("Issued by an intermediary"),
    "other": N_("Other"),
}
NECESSITIES = {"required": N_("Required"), "optional": N_("Optional"), "conditional": N_("Required in some cases")}
OPTIONS = {"source": list(SOURCES.items()), "necessity": list(NECESSITIES.items())}
ITEM_PROBLEMS = {
    "not-found": N_("No such service item of your department, or no such resource."),
    "forbidden": N_("Only the department's data administrator may change its service items."),
    "unknown-items": N_("The resource has no such data item."),
    "service-item-exists": N_("This code is already registered."),
    "validation": N_("The platform refused some of the values."),
}


# What a page may say on arrival (?done=…), after the change it names.
DONE = {
    "renamed": N_("The service item has been renamed."),
    "deleted": N_("The service item has been deleted, with its materials."),
}


def item_path(code: str) -> str | None:
    """The API's path of a service item, or None for a code that cannot be one."""
    return f"/v1/registry/service-items/{code}" if SERVICE_ITEM_CODE.match(code) else None


def material_spec(material: dict[str, Any], resource: str | None, items: list[str] | None) -> dict[str, Any]:
    """A material as the API rewrites it (PUT): as it is, with this mapping (None: unmapped)."""
    keep = {k: material[k] for k in ("name", "source", "necessity")}
    return keep | {"resource": resource, "items": items}


async def items_page(
    request: Request,
    session: Session,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, str] | None = None,
    cursor: str | None = None,
    done: str | None = None,
) -> Response:
    params = {"dept": session.department, "limit": "100"} | ({"cursor": cursor} if cursor else {})
    listing: dict[str, Any] = {"items": [], "next_cursor": None}
    problem, department = None, None
    try:
        listing = await api_get(request, session, "/v1/registry/service-items", params)
        stats = await api_get(request, session, "/v1/registry/stats")
        department = next((d for d in stats["departments"] if d["dept"] == session.department), None)
    except ApiProblem as refused:
        problem = readable(refused)
    return page(
        request,
        session,
        "service_items.html",
        status=status,
        listing=listing,
        department=department,
        problem=problem,
        errors=errors or {},
        typed=typed or {},
        notice=DONE.get(done or ""),
    )


@router.get("/service-items", response_class=HTMLResponse, summary="The department's service items (事项) and 免提交")
async def service_items(
    request: Request, session: PersonDep, cursor: str | None = None, done: str | None = None
) -> Response:
    return await items_page(request, session, cursor=cursor, done=done)


@router.post("/service-items", summary="Register a service item of the department")
async def register(
    request: Request,
    session: PersonDep,
    code: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> Response:
    typed = {"s_code": code, "s_name": name}
    errors: dict[str, str] = {}
    if not SERVICE_ITEM_CODE.match(code.strip()):
        errors["s_code"] = N_("Enter the service item's code (4 to 64 letters, digits or hyphens).")
    check_text(errors, "s_name", name, (2, 200), N_("Enter 2 to 200 characters."))
    if not errors:
        body = {"code": code.strip(), "name": name.strip(), "materials": []}
        refused = await api_refusal(request, session, "POST", "/v1/registry/service-items", body)
        if refused is None:
            return go(request, session, f"{ITEMS}/{code.strip()}")
        errors = refusal(refused, "s_", typed, ITEM_PROBLEMS)
        if refused.code == "service-item-exists":
            errors["s_code"] = ITEM_PROBLEMS["service-item-exists"]
    return await items_page(request, session, status=400, errors=errors, typed=typed)


async def item_page(
    request: Request,
    session: Session,
    code: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    typed: dict[str, str] | None = None,
    done: str | None = None,
) -> Response:
    """A service item with its materials and 免提交 rate; for its own department's data
    administrator, the forms to map each government-issued material, unmap it, add or remove one,
    to rename the item or delete it."""

    async def mapping(item: dict[str, Any]) -> dict[str, object]:
        published: dict[str, Any] = {"items": []}
        # What a material may map to: the published entries (the API checks the choice again);
        # without them the form still takes a typed code.
        with contextlib.suppress(ApiProblem):
            published = await api_get(
                request, session, "/v1/registry/resources", {"status": "published", "limit": "200"}
            )
        keeper = item["dept"] == session.department and "data_admin" in session.roles
        return {"keeper": keeper, "resources": published["items"]}

    return await object_page(
        request,
        session,
        item_path(code),
        "service_items_item.html",
        name="item",
        what=f"service item {code}",
        missing={"not-found": N_("No such service item.")},
        status=status,
        more=mapping,
        sources=SOURCES,
        necessities=NECESSITIES,
        options=OPTIONS,
        errors=errors or {},
        typed=typed or {},
        notice=DONE.get(done or ""),
    )


@router.get("/service-items/{code}", response_class=HTMLResponse, summary="A service item (事项) and its materials")
async def service_item(request: Request, session: PersonDep, code: str, done: str | None = None) -> Response:
    return await item_page(request, session, code, done=done)


@router.post("/service-items/{code}/rename", summary="Rename a service item")
async def rename(request: Request, session: PersonDep, code: str, name: Annotated[str, Form()] = "") -> Response:
    typed = {"r_name": name}
    errors: dict[str, str] = {}
    check_text(errors, "r_name", name, (2, 200), N_("Enter 2 to 200 characters."))
    path = item_path(code)
    if not errors and path is not None:
        refused = await api_refusal(request, session, "PATCH", path, {"name": name.strip()})
        if refused is None:
            return go(request, session, f"{ITEMS}/{code}?done=renamed")
        if refused.status == 404:
            return not_found(request, session, refused)
        errors = refusal(refused, "r_", typed, ITEM_PROBLEMS)
    return await item_page(request, session, code, status=400, errors=errors, typed=typed)


async def delete_page(request: Request, session: Session, code: str, *, status: int = 200, **more: object) -> Response:
    """The confirmation of a service item's deletion: the item and what goes with it."""
    shown: dict[str, Any] = {"errors": {}} | more
    return await object_page(
        request,
        session,
        item_path(code),
        "service_items_delete.html",
        name="item",
        what=f"service item {code}",
        missing={"not-found": N_("No such service item.")},
        status=status,
        **shown,
    )


@router.get("/service-items/{code}/delete", response_class=HTMLResponse, summary="Confirm a service item's deletion")
async def confirm_delete(request: Request, session: PersonDep, code: str) -> Response:
    return await delete_page(request, session, code)


@router.post("/service-items/{code}/delete", summary="Delete a service item with its materials")
async def delete_item(request: Request, session: PersonDep, code: str) -> Response:
    path = item_path(code)
    refused = await api_refusal(request, session, "DELETE", path) if path else None
    if path is None or (refused is not None and refused.status == 404):
        return not_found(request, session, refused or ApiProblem(404, "not-found", "Not found", f"service item {code}"))
    if refused is not None:
        errors = refusal(refused, "d_", (), ITEM_PROBLEMS)
        return await delete_page(request, session, code, status=refused.status, errors=errors)
    return go(request, session, f"{ITEMS}?done=deleted")


async def material_of(request: Request, session: Session, code: str, material_id: str) -> dict[str, Any] | None:
    """The material ``material_id`` of the item as the API shows it (None: no such material)."""
    path = item_path(code)
    if path is None:
        return None
    item = await api_get(request, session, path)
    return next((m for m in item["materials"] if m["id"] == material_id), None)


def not_found(request: Request, session: Session, refused: ApiProblem) -> Response:
    """A write the API refused because the item is not the person's department's (or is gone)."""
    message = ITEM_PROBLEMS["not-found"]
    return problem_page(request, session, refused, message)


@router.post("/service-items/{code}/materials/{material_id}/map", summary="Map a material to a resource's data items")
async def map_material(
    request: Request,
    session: PersonDep,
    code: str,
    material_id: str,
    resource: Annotated[str, Form()] = "",
    items: Annotated[str, Form()] = "",
) -> Response:
    prefix = f"map-{material_id}-"
    typed = {f"{prefix}resource": resource, f"{prefix}items": items}
    errors: dict[str, str] = {}
    check_text(errors, f"{prefix}resource", resource, (3, 40), N_("Enter a resource code (3 to 40 characters)."))
    covering = check_items(errors, f"{prefix}items", items)
    return await rewrite(request, session, code, material_id, errors, typed, resource.strip(), covering)


@router.post("/service-items/{code}/materials/{material_id}/unmap", summary="Take a material's mapping away")
async def unmap_material(request: Request, session: PersonDep, code: str, material_id: str) -> Response:
    return await rewrite(request, session, code, material_id, {}, {}, None, None)


async def rewrite(
    request: Request,
    session: Session,
    code: str,
    material_id: str,
    errors: dict[str, str],
    typed: dict[str, str],
    resource: str | None,
    covering: list[str] | None,
) -> Response:
    """The material rewritten with this mapping (PUT, as the API takes a material whole)."""
    prefix = f"map-{material_id}-"
    try:
        material = await material_of(request, session, code, material_id)
        if material is None:
            raise ApiProblem(404, "not-found", "Not found", f"material {material_id}")
        if not errors:
            body = material_spec(material, resource, covering)
            await api_send(request, session, "PUT", f"{item_path(code)}/materials/{uuid.UUID(material_id)}", body)
    except ApiProblem as refused:
        if refused.status == 404 and refused.title.startswith("resource"):  # the one typed: said next to it
            return await item_page(
                request,
                session,
                code,
                status=400,
                errors={
                    f"{prefix}resource": N_("No such resource is visible to you."),
                    f"{prefix}detail": readable(refused),
                },
                typed=typed,
            )
        if refused.status == 404:  # the item, or the material: not the person's department's, or gone
            return not_found(request, session, refused)
        errors = refusal(refused, prefix, typed, ITEM_PROBLEMS)
        if refused.code == "unknown-items":  # items the resource does not have: said next to them
            errors[f"{prefix}items"] = ITEM_PROBLEMS["unknown-items"]
    else:
        if not errors:
            return go(request, session, f"{ITEMS}/{code}#material-{material_id}")
    return await item_page(request, session, code, status=400, errors=errors, typed=typed)


@router.post("/service-items/{code}/materials", summary="Add a material to a service item")
async def add_material(
    request: Request,
    session: PersonDep,
    code: str,
    name: Annotated[str, Form()] = "",
    source: Annotated[str, Form()] = "government",
    necessity: Annotated[str, Form()] = "required",
) -> Response:
    typed = {"m_name": name, "m_source": source, "m_necessity": necessity}
    errors: dict[str, str] = {}
    check_text(errors, "m_name", name, (2, 200), N_("Enter 2 to 200 characters."))
    if source not in SOURCES:
        errors["m_source"] = N_("Choose one of the options.")
    if necessity not in NECESSITIES:
        errors["m_necessity"] = N_("Choose one of the options.")
    path = item_path(code)
    if not errors and path is not None:
        body = {"name": name.strip(), "source": source, "necessity": necessity}
        refused = await api_refusal(request, session, "POST", f"{path}/materials", body)
        if refused is None:
            return go(request, session, f"{ITEMS}/{code}")
        if refused.status == 404:
            return not_found(request, session, refused)
        errors = refusal(refused, "m_", typed, ITEM_PROBLEMS)
    return await item_page(request, session, code, status=400, errors=errors, typed=typed)


@router.post("/service-items/{code}/materials/{material_id}/remove", summary="Remove a material")
async def remove_material(request: Request, session: PersonDep, code: str, material_id: str) -> Response:
    path = item_path(code)
    try:
        if path is None:
            raise ApiProblem(404, "not-found", "Not found", f"service item {code}")
        await api_send(request, session, "DELETE", f"{path}/materials/{uuid.UUID(material_id)}")
    except ValueError:
        return not_found(request, session, ApiProblem(404, "not-found", "Not found", f"material {material_id}"))
    except ApiProblem as refused:
        if refused.status == 404:
            return not_found(request, session, refused)
        errors = refusal(refused, "m_", (), ITEM_PROBLEMS)
        return await item_page(request, session, code, status=400, errors=errors)
    return go(request, session, f"{ITEMS}/{code}")

"""The data administrator's pages (journey 1): the catalogue (目录) searched, an entry with its items
and versions; a draft (草稿) created and edited with its item table (信息项), submitted for review
(提交审核); entries imported from an .xlsx (批量导入) with its row errors, and the import template.

The registry decides everything: these pages check only what a person can be told at once, in
their language (a name too short, a length that is not a number), and show the registry's own
refusals next to the field they name."""

from __future__ import annotations

import re
import uuid
from itertools import zip_longest
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData, UploadFile

from services.console.api.common import (
    PersonDep,
    SignInAgain,
    api_get,
    api_refusal,
    api_send,
    console_of,
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

SEARCH_MAX = 100  # the registry's search (q)
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

router = page_router()


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
            answer = await api_get(request, session, "/v1/registry/resources", params)
            resources, next_cursor = answer["items"], answer["next_cursor"]
        except ApiProblem as refused:
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


# --------------------------------------------------------------------------- drafts (草稿)

# The registry's vocabularies (its catalogue schemas); it checks them again on every call.
DATA_TYPES = {
    "C": N_("Characters"),
    "N": N_("Number"),
    "Y": N_("Currency"),
    "D": N_("Date"),
    "T": N_("Date and time"),
    "L": N_("Logical"),
    "M": N_("Memo"),
    "G": N_("Binary"),
    "B": N_("Double"),
    "I": N_("Integer"),
    "F": N_("Floating point"),
}
MASKINGS = {
    "": N_("None"),
    "id_card": N_("ID card number"),
    "mobile": N_("Mobile number"),
    "name": N_("Person's name"),
    "full": N_("Masked entirely"),
}
FORMATS = ("服务接口", "数据库", "电子表格", "电子文件", "图形图像", "流媒体", "自描述格式")  # the API's own values
UPDATE_CYCLES = ("实时", "每日", "每周", "每月", "每季度", "每半年", "每年", "其他")
SHARE_MODES = ("接口", "库表", "文件")
SUBJECTS = {
    "id_card": N_("Natural persons"),
    "credit_code": N_("Legal persons"),
    "id_card,credit_code": N_("Natural and legal persons"),
}
YES_NO = {"no": N_("No"), "yes": N_("Yes")}
CHOICES: dict[str, Any] = {
    "classification": CLASSIFICATIONS,
    "format": FORMATS,
    "update_cycle": UPDATE_CYCLES,
    "share_type": SHARE_TYPES,
    "share_mode": SHARE_MODES,
    "open_public": YES_NO,
    "subject_types": SUBJECTS,
}
FIELDS = (
    "name",
    "summary",
    "category",
    "classification",
    "format",
    "update_cycle",
    "share_type",
    "share_condition",
    "share_basis",
    "share_mode",
    "open_public",
    "open_condition",
    "related_codes",
    "subject_types",
)
ITEM_FIELDS = ("name", "data_type", "length", "sensitive", "masking")
BLANK_ITEM = {"name": "", "data_type": "C", "length": "", "sensitive": "no", "masking": ""}
BLANK = {
    "format": "服务接口",
    "update_cycle": "实时",
    "classification": "basic",
    "share_type": "unconditional",
    "share_mode": "接口",
    "open_public": "no",
    "subject_types": "id_card",
}
MAX_ITEMS = 200  # the registry's limit of 信息项 per entry
CATEGORY = re.compile(r"[1-9]\d{5}(\d{1,6})?")  # 分类码: 类1 + 项2 + 目3 (+ 细目 1–6)
LIST_SEPARATOR = re.compile(r"[;；,，\s]+")

WHOLE_NUMBER = N_("Enter a whole number.")
NOT_ACCEPTED = N_("The platform did not accept this value.")
# The registry's problems about one field of a draft (services/registry/problems.py), in the person's language.
FIELD_PROBLEMS = {
    "unknown-category": ("category", N_("There is no such category code in the classification.")),
    "category-full": ("category", N_("This category has no codes left.")),
    "category-mismatch": ("classification", N_("The classification does not match the category code.")),
    "unknown-related": ("related_codes", N_("Some related codes name no catalogue entry.")),
}
# Where the API's validation errors (by the body's top-level field) are shown on the form.
API_FIELDS = {f: f for f in ("name", "summary", "category", "classification", "format", "update_cycle")} | {
    "items": "items",
    "share": "share_type",
    "open": "open_public",
    "related_codes": "related_codes",
    "subject_types": "subject_types",
}
# Every field the API names — a check of the whole body ("") above the form — gets the same words.
DRAFT_FIELDS = API_FIELDS | {"": "form"}
DRAFT_SENTENCES = dict.fromkeys(DRAFT_FIELDS.values(), NOT_ACCEPTED)
CHANGE_PROBLEMS = {
    "invalid-state": N_("This entry cannot be changed now (it is submitted for review, or deprecated)."),
    "forbidden": N_("You may not change this entry."),
    "not-found": N_("No such catalogue entry."),
}
NOTICES = {
    "created": N_("The draft was created."),
    "saved": N_("The draft was saved."),
    "submitted": N_("Submitted for review."),
}


def entry_path(code: str) -> str:
    return f"/v1/registry/resources/{quote(code, safe='/')}"


def console_path(code: str) -> str:
    return f"/console/catalogue/{quote(code, safe='/')}"


def typed_of_form(form: FormData) -> tuple[dict[str, str], list[dict[str, str]]]:
    """What the person typed: the entry's fields and its rows of items, as text."""
    typed = {name: str(form.get(name) or "") for name in FIELDS}
    columns = [[str(v) for v in form.getlist(f"item_{f}")] for f in ITEM_FIELDS]
    items = [dict(zip(ITEM_FIELDS, (v or "" for v in row), strict=True)) for row in zip_longest(*columns)]
    return typed, items


def typed_of_content(content: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """An entry's content (as the API gives it) as the form shows it."""
    share, opened = content.get("share") or {}, content.get("open") or {}
    typed = {
        "name": content.get("name", ""),
        "summary": content.get("summary", ""),
        "category": content.get("category", ""),
        "classification": content.get("classification", ""),
        "format": content.get("format", ""),
        "update_cycle": content.get("update_cycle", ""),
        "share_type": share.get("type", ""),
        "share_condition": share.get("condition") or "",
        "share_basis": share.get("basis") or "",
        "share_mode": share.get("mode", ""),
        "open_public": "yes" if opened.get("public") else "no",
        "open_condition": opened.get("condition") or "",
        "related_codes": "; ".join(content.get("related_codes") or []),
        "subject_types": ",".join(s for s in ("id_card", "credit_code") if s in (content.get("subject_types") or [])),
    }
    items = [
        {
            "name": i.get("name", ""),
            "data_type": i.get("data_type", ""),
            "length": str(i.get("length", "")),
            "sensitive": "yes" if i.get("sensitive") else "no",
            "masking": i.get("masking") or "",
        }
        for i in content.get("items") or []
    ]
    return {k: str(v) for k, v in typed.items()}, items


def check_draft(typed: dict[str, str], items: list[dict[str, str]], *, create: bool) -> dict[str, str]:
    """What can be said at once, in the person's language, next to its field (the registry checks
    everything again: the length allowed for each data type, the classification, related codes)."""
    errors: dict[str, str] = {}
    if not 2 <= len(typed["name"].strip()) <= 100:
        errors["name"] = N_("A name has 2 to 100 characters.")
    if not 1 <= len(typed["summary"].strip()) <= 2000:
        errors["summary"] = N_("Write a summary (at most 2000 characters).")
    if create and CATEGORY.fullmatch(typed["category"].strip()) is None:
        errors["category"] = N_("A category code has 6 to 12 digits and does not start with 0, such as 101010.")
    for name, choices in CHOICES.items():
        if name in ("classification",) and not create:
            continue
        if typed[name] not in choices:
            errors[name] = N_("Choose one of the options.")
    if typed["share_type"] == "conditional" and not typed["share_condition"].strip():
        errors["share_condition"] = N_("Conditional sharing needs its condition.")
    if typed["share_type"] == "none" and not typed["share_basis"].strip():
        errors["share_basis"] = N_("Not sharing needs its legal basis.")
    for name in ("share_condition", "share_basis", "open_condition"):
        if len(typed[name]) > 500:
            errors[name] = N_("At most 500 characters.")
    if any(not 8 <= len(c) <= 40 for c in LIST_SEPARATOR.split(typed["related_codes"].strip()) if c):
        errors["related_codes"] = N_("Each related code has 8 to 40 characters.")
    names = [i["name"].strip() for i in items]
    if not items:
        errors["items"] = N_("List at least one item.")
    elif len(items) > MAX_ITEMS:
        errors["items"] = N_("At most 200 items.")
    elif len(set(names)) != len(names):
        errors["items"] = N_("Two items have the same name.")
    for n, item in enumerate(items):
        if not 1 <= len(item["name"].strip()) <= 50:
            errors[f"item-{n}-name"] = N_("Name the item (at most 50 characters).")
        if item["data_type"] not in DATA_TYPES:
            errors[f"item-{n}-data_type"] = N_("Choose one of the options.")
        if not (item["length"].strip().isdigit() and len(item["length"].strip()) <= 10):
            errors[f"item-{n}-length"] = WHOLE_NUMBER
        if item["sensitive"] not in YES_NO or item["masking"] not in MASKINGS:
            errors[f"item-{n}-masking"] = N_("Choose one of the options.")
    return errors


def body_of(typed: dict[str, str], items: list[dict[str, str]], *, create: bool) -> dict[str, Any]:
    """The registry's create (or, without the category, its patch) body of a checked form."""
    body: dict[str, Any] = {
        "name": typed["name"].strip(),
        "summary": typed["summary"].strip(),
        "format": typed["format"],
        "update_cycle": typed["update_cycle"],
        "items": [
            {
                "name": i["name"].strip(),
                "data_type": i["data_type"],
                "length": int(i["length"]),
                "sensitive": i["sensitive"] == "yes",
                "masking": i["masking"] or None,
            }
            for i in items
        ],
        "share": {
            "type": typed["share_type"],
            "condition": typed["share_condition"].strip() or None,
            "basis": typed["share_basis"].strip() or None,
            "mode": typed["share_mode"],
        },
        "open": {"public": typed["open_public"] == "yes", "condition": typed["open_condition"].strip() or None},
        "related_codes": [c for c in LIST_SEPARATOR.split(typed["related_codes"].strip()) if c],
        "subject_types": typed["subject_types"].split(","),
    }
    if create:
        body |= {"category": typed["category"].strip(), "classification": typed["classification"]}
    return body


def draft_errors(refused: ApiProblem) -> dict[str, str]:
    """The registry's refusal of a draft next to the fields it names: a message in the person's
    language, and the API's own words under it (``<field>_detail``); what names no field goes above
    the form."""
    if refused.code in FIELD_PROBLEMS:
        field, message = FIELD_PROBLEMS[refused.code]
        # The detail's first clause: what was refused (the rest lists every valid code, too long to read here).
        return {field: message, f"{field}_detail": refused.detail.split(";", 1)[0]}
    errors = refusal_errors(refused, DRAFT_FIELDS, CHANGE_PROBLEMS, otherwise=NOT_ACCEPTED, sentences=DRAFT_SENTENCES)
    # Pydantic's lead of a validator's message says nothing to a person.
    return {name: said.removeprefix("Value error, ") for name, said in errors.items()}


def rows_changed(action: str, items: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """The rows after "add a row" or "remove row n" (None: the form was saved, not reshaped)."""
    if action == "add-row":
        return [*items, dict(BLANK_ITEM)] if len(items) < MAX_ITEMS else items
    if action.startswith("remove-") and action.removeprefix("remove-").isdigit():
        n = int(action.removeprefix("remove-"))
        return [item for i, item in enumerate(items) if i != n]
    return None


def draft_page(
    request: Request,
    session: Session,
    *,
    typed: dict[str, str],
    items: list[dict[str, str]],
    code: str | None = None,
    status: int = 200,
    errors: dict[str, str] | None = None,
) -> Response:
    """The draft form: a new entry (``code`` None) or the edit of one."""
    return page(
        request,
        session,
        "catalogue_draft.html",
        status=status,
        code=code,
        action=f"{console_path(code)}/edit" if code else "/console/catalogue/new",
        typed=typed,
        items=items,
        errors=errors or {},
        classifications=CLASSIFICATIONS,
        share_types=SHARE_TYPES,
        formats=FORMATS,
        update_cycles=UPDATE_CYCLES,
        share_modes=SHARE_MODES,
        subjects=SUBJECTS,
        yes_no=YES_NO,
        data_types=DATA_TYPES,
        maskings=MASKINGS,
    )


@router.get("/catalogue/new", response_class=HTMLResponse, summary="The form of a new draft entry (草稿)")
async def new_draft(request: Request, session: PersonDep) -> Response:
    typed = {name: BLANK.get(name, "") for name in FIELDS}
    return draft_page(request, session, typed=typed, items=[dict(BLANK_ITEM)])


@router.post("/catalogue/new", summary="Create a draft entry, or add or remove a row of its items")
async def create_draft(request: Request, session: PersonDep) -> Response:
    form = await request.form()
    typed, items = typed_of_form(form)
    if (reshaped := rows_changed(str(form.get("action") or "save"), items)) is not None:
        return draft_page(request, session, typed=typed, items=reshaped)
    errors = check_draft(typed, items, create=True)
    if not errors:
        try:
            created = await api_send(
                request, session, "POST", "/v1/registry/resources", body_of(typed, items, create=True)
            )
        except ApiProblem as refused:
            errors = draft_errors(refused)
        else:
            return go(request, session, f"{console_path(created['code'])}?notice=created")
    return draft_page(request, session, typed=typed, items=items, status=400, errors=errors)


def not_found(request: Request, session: Session, refused: ApiProblem) -> Response:
    # Another department's draft is "not found" to the API, and so to the person.
    message = N_("No such catalogue entry.") if refused.status == 404 else None
    return problem_page(request, session, refused, message)


async def entry_and_versions(
    request: Request, session: Session, code: str
) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """An entry as the API shows it to the person and, where the API shows them, its versions."""
    entry: dict[str, Any] = await api_get(request, session, entry_path(code))
    try:
        versions: list[dict[str, Any]] | None = (await api_get(request, session, f"{entry_path(code)}/versions"))[
            "items"
        ]
    except ApiProblem:
        versions = None  # the history is the provider's and the platform admin's to see (the API says)
    return entry, versions


@router.get("/catalogue/{code:path}/edit", response_class=HTMLResponse, summary="The form editing an entry's draft")
async def edit_draft(request: Request, session: PersonDep, code: str) -> Response:
    try:
        entry, versions = await entry_and_versions(request, session, code)
    except ApiProblem as refused:
        return not_found(request, session, refused)
    # The newest version is what an edit changes: the draft, or the published one a new draft starts from.
    content = versions[-1]["content"] if versions else entry
    typed, items = typed_of_content(content)
    return draft_page(request, session, typed=typed, items=items or [dict(BLANK_ITEM)], code=code)


@router.post("/catalogue/{code:path}/edit", summary="Save an entry's draft (the API: PATCH), or add or remove a row")
async def save_draft(request: Request, session: PersonDep, code: str) -> Response:
    form = await request.form()
    typed, items = typed_of_form(form)
    # The category and with it the code never change: shown, not sent.
    typed["category"], typed["classification"] = str(form.get("shown_category") or ""), ""
    if (reshaped := rows_changed(str(form.get("action") or "save"), items)) is not None:
        return draft_page(request, session, typed=typed, items=reshaped, code=code)
    errors = check_draft(typed, items, create=False)
    if not errors:
        refused = await api_refusal(request, session, "PATCH", entry_path(code), body_of(typed, items, create=False))
        if refused is None:
            return go(request, session, f"{console_path(code)}?notice=saved")
        if refused.status == 404:
            return not_found(request, session, refused)
        errors = draft_errors(refused)
    return draft_page(request, session, typed=typed, items=items, code=code, status=400, errors=errors)


@router.post("/catalogue/{code:path}/submit", summary="Submit the entry's draft for review (提交审核)")
async def submit_draft(request: Request, session: PersonDep, code: str) -> Response:
    refused = await api_refusal(request, session, "POST", f"{entry_path(code)}/submit")
    if refused is not None:
        if refused.status == 404:
            return not_found(request, session, refused)
        return await entry_page(
            request,
            session,
            code,
            status=refused.status,
            problem=CHANGE_PROBLEMS.get(refused.code, NOT_ACCEPTED),
            said=readable(refused),
        )
    return go(request, session, f"{console_path(code)}?notice=submitted")


# --------------------------------------------------------------------------- import (批量导入)

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
UPLOAD_TYPES = {".xlsx": XLSX, ".csv": "text/csv"}
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # the registry's own limit; it checks again
IMPORT_STATUSES = {
    "queued": N_("Queued"),
    "running": N_("Importing"),
    "succeeded": N_("Imported"),
    "failed": N_("Not imported"),
}
UPLOAD_PROBLEMS = {
    "malformed-file": N_("The file cannot be read as a spreadsheet."),
    "file-too-large": N_("The file is too large (at most 8 MiB and 10,000 rows)."),
    "unsupported-file": N_("Upload an .xlsx or a .csv file."),
    "forbidden": N_("Only a data administrator may import catalogue entries."),
}
TEMPLATE_NAME = "资源目录导入模板.xlsx"


async def api_fetch(request: Request, session: Session, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The whole answer of a call as the person (a file); refusals as for ``api_get``."""
    try:
        return await console_of(request).platform.fetch(session, method, path, **kwargs)
    except ApiProblem as refused:
        if refused.status == 401:
            raise SignInAgain(session.signed_out()) from refused
        raise


def attachment(name: str, fallback: str) -> str:
    """RFC 6266 ``Content-Disposition``: the Chinese name as ``filename*`` (RFC 8187), an ASCII
    name for the few clients that know only ``filename``."""
    plain = f'; filename="{fallback}"' if fallback else ""
    return f"attachment{plain}; filename*=UTF-8''{quote(name)}"


@router.get("/catalogue/import", response_class=HTMLResponse, summary="Import catalogue entries from an .xlsx")
async def import_form(request: Request, session: PersonDep) -> Response:
    return import_page(request, session, errors={}, said=None)


@router.get("/catalogue/import/template.xlsx", summary="The registry's import template (导入模板)")
async def import_template(request: Request, session: PersonDep) -> Response:
    try:
        answer = await api_fetch(request, session, "GET", "/v1/registry/imports/template.xlsx")
    except ApiProblem as refused:
        return problem_page(request, session, refused)
    disposition = attachment(TEMPLATE_NAME, "catalogue-import-template.xlsx")
    return Response(answer.content, media_type=XLSX, headers={"Content-Disposition": disposition})


@router.post("/catalogue/import", summary="Upload an .xlsx or .csv: the registry's import job (导入任务)")
async def upload(request: Request, session: PersonDep) -> Response:
    form = await request.form()
    file = form.get("file")
    errors: dict[str, str] = {}
    said = None
    if not isinstance(file, UploadFile) or not file.filename:
        errors["file"] = N_("Choose a file to import.")
    else:
        suffix = "." + file.filename.rsplit(".", 1)[-1].lower() if "." in file.filename else ""
        content = await file.read(MAX_UPLOAD_BYTES + 1)
        if suffix not in UPLOAD_TYPES:
            errors["file"] = UPLOAD_PROBLEMS["unsupported-file"]
        elif len(content) > MAX_UPLOAD_BYTES:
            errors["file"] = UPLOAD_PROBLEMS["file-too-large"]
        else:
            # The file's name (RFC 6266) is what the registry's job records and its page shows.
            headers = {
                "content-type": UPLOAD_TYPES[suffix],
                "content-disposition": attachment(file.filename[-200:], ""),
            }
            try:
                answer = await api_fetch(
                    request, session, "POST", "/v1/registry/imports/resources", content=content, headers=headers
                )
            except ApiProblem as refused:
                errors["file"] = UPLOAD_PROBLEMS.get(refused.code, NOT_ACCEPTED)
                said = readable(refused)
            else:
                return go(request, session, f"/console/catalogue/imports/{answer.json()['id']}")
    return import_page(request, session, status=400, errors=errors, said=said)


def import_page(request: Request, session: Session, *, status: int = 200, **context: object) -> Response:
    """The import form; a file over the limit is refused by the page's script before it is sent."""
    too_large = UPLOAD_PROBLEMS["file-too-large"]
    return page(
        request,
        session,
        "catalogue_import.html",
        status=status,
        max_bytes=MAX_UPLOAD_BYTES,
        too_large=too_large,
        **context,
    )


@router.get(
    "/catalogue/imports/{import_id}", response_class=HTMLResponse, summary="An import job: progress, result, row errors"
)
async def import_job(request: Request, session: PersonDep, import_id: str) -> Response:
    try:
        job = await api_get(request, session, f"/v1/registry/imports/{uuid.UUID(import_id)}")
    except ValueError:
        job = None
        refused = ApiProblem(404, "not-found", "Not found", f"import {import_id}")
    except ApiProblem as err:
        job, refused = None, err
    if job is None:
        message = N_("No such import.") if refused.status == 404 else None
        return problem_page(request, session, refused, message)
    return page(request, session, "catalogue_job.html", job=job, statuses=IMPORT_STATUSES)


# --------------------------------------------------------------------------- an entry


async def entry_page(
    request: Request,
    session: Session,
    code: str,
    *,
    notice: str = "",
    status: int = 200,
    problem: str | None = None,
    said: str | None = None,
) -> Response:
    """An entry with its items, its versions where the API shows them and — for its provider's data
    administrator — the draft's edit and submit (the API decides; these only offer what it allows)."""
    try:
        entry, versions = await entry_and_versions(request, session, code)
    except ApiProblem as refused:
        return not_found(request, session, refused)
    working = versions[-1] if versions else None
    own = entry["provider"] == session.department and "data_admin" in session.roles
    changeable = own and entry["status"] != "deprecated"
    return page(
        request,
        session,
        "resource.html",
        status=status,
        entry=entry,
        versions=versions,
        statuses=STATUSES,
        version_statuses=VERSION_STATUSES,
        share_types=SHARE_TYPES,
        classifications=CLASSIFICATIONS,
        can_edit=changeable and (working is None or working["status"] != "submitted"),
        can_submit=changeable and working is not None and working["status"] == "draft",
        working=working,
        notice=NOTICES.get(notice),
        problem=problem,
        said=said,
    )


@router.get("/catalogue/{code:path}", response_class=HTMLResponse, summary="A catalogue entry, its items and versions")
async def resource(request: Request, session: PersonDep, code: str, notice: str = "") -> Response:
    return await entry_page(request, session, code, notice=notice)

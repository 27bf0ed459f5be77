"""Import and export routes (批量导入导出): HTTP in, one domain call, HTTP out."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime
from typing import Annotated
from urllib.parse import quote, unquote, urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from services.common.errors import CommonProblem, problem_responses
from services.common.http import OrjsonResponse
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.common.security import Principal
from services.common.uow import UnitOfWork
from services.registry.api.catalogue import resource_public
from services.registry.api.common import AUTH, TopicsDep
from services.registry.catalogue import service
from services.registry.catalogue.schemas import Classification, ResourceList, ShareType
from services.registry.events import Topics
from services.registry.models import ImportJob, ImportKind, ImportStatus, ResourceStatus
from services.registry.problems import RegistryProblem
from services.registry.transfer import exports, files, jobs
from services.registry.transfer import service_items as item_sheet

router = APIRouter(prefix="/v1/registry", tags=["registry: import and export"], responses=problem_responses(*AUTH))

EXPORT_LIMIT = 10_000


class RowError(BaseModel):
    row: int  # as the spreadsheet numbers it: the header is row 1
    column: str  # the column's header ("" for the whole row or file)
    reason: str  # 中文
    reason_en: str


class ImportJobPublic(BaseModel):
    """An import job (导入任务): its state, progress and, when it failed, its error report."""

    id: uuid.UUID
    kind: ImportKind
    status: ImportStatus
    file_name: str
    rows_total: int
    rows_checked: int  # progress: rows checked so far, of rows_total
    imported: int  # what a succeeded import created (0 otherwise: all or nothing)
    codes: list[str]  # their codes, in the order of the rows
    error_count: int
    errors: list[RowError]  # the first 500, by row and column
    reason: str | None  # why it failed
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def job_public(job: ImportJob) -> ImportJobPublic:
    return ImportJobPublic(
        id=job.id,
        kind=job.kind,
        status=job.status,
        file_name=job.file_name,
        rows_total=job.rows_total,
        rows_checked=job.rows_checked,
        imported=len(job.codes),
        codes=job.codes,
        error_count=job.error_count,
        errors=[RowError.model_validate(e) for e in job.errors],
        reason=job.reason,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


def file_name(request: Request, media_type: str) -> str:
    """The uploaded file's name, from ``Content-Disposition`` if the client sent one."""
    if (found := FILENAME.search(request.headers.get("content-disposition", ""))) is not None:
        return unquote(found.group(1)).strip()[:200] or "upload"
    return "upload.xlsx" if media_type == files.XLSX_MEDIA_TYPE else "upload.csv"


UPLOAD_PROBLEMS = (
    CommonProblem.FORBIDDEN,
    RegistryProblem.MALFORMED_FILE,
    RegistryProblem.FILE_TOO_LARGE,
    RegistryProblem.UNSUPPORTED_FILE,
)
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {files.XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}, "text/csv": {}},
    }
}


async def queue_import(
    request: Request,
    principal: Principal,
    uow: UnitOfWork,
    topics: Topics,
    kind: ImportKind,
) -> JSONResponse:
    """Read the body as a file (refused at once if it cannot be read) and queue its rows."""
    service.require_data_admin(principal)  # before reading a file nobody may import
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    header, rows = await asyncio.to_thread(files.read_upload, await request.body(), media_type)
    job = await jobs.submit_import(uow, principal, kind, file_name(request, media_type), header, rows, topics)
    await uow.session.refresh(job)
    body = job_public(job).model_dump(mode="json")
    # The unit of work commits before the answer is sent; this process's worker looks once it has.
    worker: jobs.ImportWorker = request.app.state.imports
    return JSONResponse(
        body,
        status_code=202,
        headers={"Location": f"/v1/registry/imports/{job.id}"},
        background=BackgroundTask(worker.nudge),
    )


def attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"}


@router.get(
    "/imports/template.xlsx",
    summary="The .xlsx import template (导入模板): dropdowns and 填写说明",
    response_class=Response,
    responses={200: {"content": {files.XLSX_MEDIA_TYPE: {}}}},
)
async def import_template(principal: CurrentPrincipal) -> Response:
    content = await asyncio.to_thread(files.template)
    return Response(content, media_type=files.XLSX_MEDIA_TYPE, headers=attachment("资源目录导入模板.xlsx"))


@router.get(
    "/imports/service-items/template.xlsx",
    summary="The .xlsx template for service items (事项导入模板): dropdowns and 填写说明",
    response_class=Response,
    responses={200: {"content": {files.XLSX_MEDIA_TYPE: {}}}},
)
async def service_items_template(principal: CurrentPrincipal) -> Response:
    content = await asyncio.to_thread(item_sheet.template)
    return Response(content, media_type=files.XLSX_MEDIA_TYPE, headers=attachment("事项清单导入模板.xlsx"))


@router.post(
    "/imports/resources",
    status_code=202,
    response_model=ImportJobPublic,
    summary="Import draft catalogue entries from an .xlsx or .csv (the body), all or nothing, as a job",
    responses=problem_responses(*UPLOAD_PROBLEMS),
    openapi_extra=UPLOAD_BODY,
)
async def import_resources(
    request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> JSONResponse:
    return await queue_import(request, principal, uow, topics, ImportKind.RESOURCES)


@router.post(
    "/imports/service-items",
    status_code=202,
    response_model=ImportJobPublic,
    summary="Import service items (事项) with their materials from an .xlsx or .csv, all or nothing, as a job",
    responses=problem_responses(*UPLOAD_PROBLEMS),
    openapi_extra=UPLOAD_BODY,
)
async def import_service_items(
    request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> JSONResponse:
    return await queue_import(request, principal, uow, topics, ImportKind.SERVICE_ITEMS)


@router.get(
    "/imports/{import_id}",
    response_model=ImportJobPublic,
    summary="An import job of your department: status, progress, and the row-by-row error report",
    responses=problem_responses(CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND),
)
async def get_import(import_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> ImportJobPublic:
    return job_public(await jobs.get_import(uow.session, principal, import_id))


Limit = Annotated[int, Query(ge=1, le=EXPORT_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=64)]
Provider = Annotated[str | None, Query(pattern=r"^[0-9A-Z]{1,18}$")]
Category = Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]+$")]


def export_filters(
    provider: Provider = None,
    category: Category = None,
    classification: Classification | None = None,
    share_type: ShareType | None = None,
    status: ResourceStatus | None = None,
) -> dict[str, str | None]:
    """The catalogue's filters (as on GET /resources) for an export."""
    return {
        "provider": provider,
        "category": category,
        "classification": classification,
        "share_type": share_type,
        "status": status,
    }


Filters = Annotated[dict[str, str | None], Depends(export_filters)]


def next_link(request: Request, rt: RuntimeDep, next_cursor: str | None) -> dict[str, str]:
    """RFC 8288 ``Link: <…>; rel="next"`` to the next page, if there is one (through the gateway)."""
    if next_cursor is None:
        return {}
    query = urlencode({**{k: v for k, v in request.query_params.items() if k != "cursor"}, "cursor": next_cursor})
    return {"Link": f'<{rt.settings.gateway_url.rstrip("/")}{request.url.path}?{query}>; rel="next"'}


@router.get(
    "/exports/resources.csv",
    summary="The catalogue entries you can see as CSV (the import template's columns)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, **problem_responses(RegistryProblem.INVALID_CURSOR)},
)
async def export_csv(
    request: Request,
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    rt: RuntimeDep,
    filters: Filters,
    limit: Limit = EXPORT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    rows, next_cursor = await service.list_resources(uow.session, principal, filters, limit, cursor)
    headers = {**attachment("资源目录.csv"), **next_link(request, rt, next_cursor)}
    return Response(exports.csv_export(rows), media_type="text/csv; charset=utf-8", headers=headers)


@router.get(
    "/exports/resources.json",
    response_model=ResourceList,
    summary="The catalogue entries you can see as JSON (as GET /resources, in larger pages)",
    responses=problem_responses(RegistryProblem.INVALID_CURSOR),
)
async def export_json(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    filters: Filters,
    limit: Limit = EXPORT_LIMIT,
    cursor: Cursor = None,
) -> ResourceList:
    rows, next_cursor = await service.list_resources(uow.session, principal, filters, limit, cursor)
    return ResourceList(items=[resource_public(r) for r in rows], next_cursor=next_cursor)


class JsonLdResponse(OrjsonResponse):
    media_type = "application/ld+json"


@router.get(
    "/exports/dcat",
    summary="The published catalogue as DCAT-AP 3.0 JSON-LD (for a CKAN / ckanext-dcat harvester)",
    response_class=JsonLdResponse,
    responses={200: {"content": {"application/ld+json": {}}}, **problem_responses(RegistryProblem.INVALID_CURSOR)},
)
async def export_dcat(
    request: Request,
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    rt: RuntimeDep,
    provider: Provider = None,
    category: Category = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    cursor: Cursor = None,
) -> JsonLdResponse:
    filters = {"provider": provider, "category": category, "status": ResourceStatus.PUBLISHED}
    rows, next_cursor = await service.list_resources(uow.session, principal, filters, limit, cursor)
    # Identifiers are the platform's public ones: through the gateway, not this service's own port.
    base = rt.settings.gateway_url.rstrip("/")
    query = {k: v for k, v in request.query_params.items() if k != "cursor"}
    page_url = f"{base}{request.url.path}"
    document = exports.dcat_catalog(rows, base, page_url, query, next_cursor)
    return JsonLdResponse(document)

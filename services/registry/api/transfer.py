"""Import and export routes (批量导入导出): HTTP in, one domain call, HTTP out."""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from services.common.errors import CommonProblem, problem_responses
from services.common.http import OrjsonResponse
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.registry.api.catalogue import resource_public
from services.registry.api.common import AUTH, TopicsDep
from services.registry.catalogue import service
from services.registry.catalogue.schemas import Classification, ResourceList, ShareType
from services.registry.models import ResourceStatus
from services.registry.problems import RegistryProblem
from services.registry.transfer import exports, files, imports

router = APIRouter(prefix="/v1/registry", tags=["registry: import and export"], responses=problem_responses(*AUTH))

EXPORT_LIMIT = 10_000


class ImportResult(BaseModel):
    imported: int
    codes: list[str]  # the 信息资源代码 allocated, in the order of the rows


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


@router.post(
    "/imports/resources",
    status_code=201,
    response_model=ImportResult,
    summary="Import draft catalogue entries from an .xlsx or .csv (the body), all or nothing",
    responses=problem_responses(
        CommonProblem.FORBIDDEN,
        RegistryProblem.MALFORMED_FILE,
        RegistryProblem.FILE_TOO_LARGE,
        RegistryProblem.UNSUPPORTED_FILE,
        RegistryProblem.IMPORT_INVALID,
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {files.XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}, "text/csv": {}},
        }
    },
)
async def import_resources(
    request: Request, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> ImportResult:
    service.require_data_admin(principal)  # before reading a file nobody may import
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    header, rows = await asyncio.to_thread(files.read_upload, await request.body(), media_type)
    created = await imports.import_resources(uow, principal, header, rows, topics)
    return ImportResult(imported=len(created), codes=[r.code for r in created])


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

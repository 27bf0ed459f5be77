"""Catalogue routes (政务信息资源目录): HTTP in, one domain call, HTTP out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.common.errors import CommonProblem, problem_responses
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.registry.api.common import AUTH, TopicsDep, today
from services.registry.catalogue import search, service
from services.registry.catalogue.classification import TAXONOMY, ClassNode
from services.registry.catalogue.schemas import (
    Classification,
    ClassificationPublic,
    ClassNodePublic,
    FieldChange,
    ResourceCreate,
    ResourceList,
    ResourcePatch,
    ResourcePublic,
    ResourceReject,
    ShareType,
    VersionList,
    VersionPublic,
)
from services.registry.models import Resource, ResourceStatus, ResourceVersion
from services.registry.problems import RegistryProblem

router = APIRouter(prefix="/v1/registry", tags=["registry"], responses=problem_responses(*AUTH))


def resource_public(r: Resource) -> ResourcePublic:
    return ResourcePublic.model_validate(
        {**{c: getattr(r, c) for c in ResourcePublic.model_fields if hasattr(r, c)}, "provider": r.provider_dept}
    )


def version_public(v: ResourceVersion, changes: list[dict[str, Any]] | None = None) -> VersionPublic:
    return VersionPublic(
        code=v.code,
        version=v.version,
        status=v.status,
        author=v.author,
        decided_by=v.decided_by,
        reason=v.reason,
        published_on=v.published_on,
        created_at=v.created_at,
        updated_at=v.updated_at,
        content=v.content,
        changes=[FieldChange.model_validate(c) for c in changes or []],
    )


def class_node_public(node: ClassNode) -> ClassNodePublic:
    return ClassNodePublic.model_validate(
        {
            "code": node.code,
            "name": node.name,
            "level": node.level,
            "kind": node.kind,
            "children": [class_node_public(c) for c in node.children],
        }
    )


@router.get("/classification", response_model=ClassificationPublic, summary="信息资源分类: the 类/项/目 tree")
async def classification(principal: CurrentPrincipal) -> ClassificationPublic:
    return ClassificationPublic(source=TAXONOMY.source, classes=[class_node_public(c) for c in TAXONOMY.classes])


@router.post(
    "/resources",
    status_code=201,
    response_model=ResourcePublic,
    summary="Create a draft catalogue entry",
    responses=problem_responses(
        CommonProblem.FORBIDDEN,
        RegistryProblem.CATEGORY_FULL,
        RegistryProblem.UNKNOWN_CATEGORY,
        RegistryProblem.CATEGORY_MISMATCH,
        RegistryProblem.UNKNOWN_RELATED,
    ),
)
async def create_resource(
    body: ResourceCreate, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> ResourcePublic:
    return resource_public(await service.create_resource(uow, principal, body, topics))


@router.get(
    "/resources",
    response_model=ResourceList,
    summary="List or search the catalogue (q: Chinese full-text search, best match first)",
    responses=problem_responses(RegistryProblem.INVALID_CURSOR),
)
async def list_resources(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    q: Annotated[str | None, Query(max_length=100, description="名称、摘要、信息项名称中的文字")] = None,
    provider: Annotated[str | None, Query(pattern=r"^[0-9A-Z]{1,18}$", description="统一社会信用代码")] = None,
    category: Annotated[str | None, Query(max_length=12, pattern=r"^[0-9]+$", description="分类码 or a prefix")] = None,
    classification: Classification | None = None,
    share_type: ShareType | None = None,
    status: ResourceStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ResourceList:
    filters = {
        "provider": provider,
        "category": category,
        "classification": classification,
        "share_type": share_type,
        "status": status,
    }
    if q is not None:
        rows, next_cursor = await search.search_resources(uow.session, principal, q, filters, limit, cursor)
    else:
        rows, next_cursor = await service.list_resources(uow.session, principal, filters, limit, cursor)
    return ResourceList(items=[resource_public(r) for r in rows], next_cursor=next_cursor)


CHANGE = (CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND, RegistryProblem.INVALID_STATE)


@router.post(
    "/resources/{code:path}/submit",
    response_model=VersionPublic,
    summary="Submit the draft version for review (provider's data_admin)",
    responses=problem_responses(*CHANGE),
)
async def submit_resource(
    code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> VersionPublic:
    _, version = await service.submit_resource(uow, principal, code, topics)
    return version_public(version)


@router.post(
    "/resources/{code:path}/publish",
    response_model=ResourcePublic,
    summary="Publish the submitted version (platform_admin); it replaces the one serving",
    responses=problem_responses(*CHANGE),
)
async def publish_resource(
    code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep, topics: TopicsDep
) -> ResourcePublic:
    resource, _ = await service.publish_resource(uow, principal, code, topics, today(rt))
    return resource_public(resource)


@router.post(
    "/resources/{code:path}/reject",
    response_model=VersionPublic,
    summary="Reject the submitted version with a reason (platform_admin); it goes back to draft",
    responses=problem_responses(*CHANGE),
)
async def reject_resource(
    code: str, body: ResourceReject, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> VersionPublic:
    _, version = await service.reject_resource(uow, principal, code, body.reason, topics)
    return version_public(version)


@router.post(
    "/resources/{code:path}/deprecate",
    response_model=ResourcePublic,
    summary="Deprecate a published entry (provider's data_admin)",
    responses=problem_responses(*CHANGE),
)
async def deprecate_resource(
    code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep, rt: RuntimeDep
) -> ResourcePublic:
    return resource_public(await service.deprecate_resource(uow, principal, code, topics, today(rt)))


@router.get(
    "/resources/{code:path}/versions",
    response_model=VersionList,
    summary="The versions of an entry, each with its changes from the previous one",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def list_versions(code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> VersionList:
    history = await service.list_versions(uow.session, principal, code)
    return VersionList(items=[version_public(v, changes) for v, changes in history])


@router.get(
    "/resources/{code:path}",
    response_model=ResourcePublic,
    summary="One catalogue entry (its published version, or its draft for the provider)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_resource(code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> ResourcePublic:
    return resource_public(await service.get_resource(uow.session, principal, code))


@router.patch(
    "/resources/{code:path}",
    response_model=VersionPublic,
    summary="Edit an entry: a draft in place; a published entry gets a new draft version",
    responses=problem_responses(*CHANGE, RegistryProblem.UNKNOWN_RELATED),
)
async def update_resource(
    code: str, body: ResourcePatch, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> VersionPublic:
    _, version = await service.update_resource(uow, principal, code, body, topics)
    return version_public(version)

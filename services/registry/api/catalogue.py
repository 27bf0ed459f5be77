"""Catalogue routes (政务信息资源目录): HTTP in, one domain call, HTTP out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.common.errors import CommonProblem, problem_responses
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.registry.api.common import AUTH, events_topic, today
from services.registry.catalogue import service
from services.registry.catalogue.classification import TAXONOMY, ClassNode
from services.registry.catalogue.schemas import (
    ClassificationPublic,
    ClassNodePublic,
    ResourceCreate,
    ResourceList,
    ResourcePublic,
    ShareType,
)
from services.registry.models import Resource, ResourceStatus
from services.registry.problems import RegistryProblem

router = APIRouter(prefix="/v1/registry", tags=["registry"], responses=problem_responses(*AUTH))


def resource_public(r: Resource) -> ResourcePublic:
    return ResourcePublic.model_validate(
        {**{c: getattr(r, c) for c in ResourcePublic.model_fields if hasattr(r, c)}, "provider": r.provider_dept}
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
    ),
)
async def create_resource(body: ResourceCreate, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> ResourcePublic:
    return resource_public(await service.create_resource(uow, principal, body))


@router.get("/resources", response_model=ResourceList, summary="Search the catalogue")
async def list_resources(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    provider: Annotated[str | None, Query(max_length=18)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    share_type: ShareType | None = None,
    status: ResourceStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> ResourceList:
    filters = {"q": q, "provider": provider, "category": category, "share_type": share_type, "status": status}
    rows, next_cursor = await service.list_resources(uow.session, principal, filters, limit, cursor)
    return ResourceList(items=[resource_public(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/resources/{code:path}/publish",
    response_model=ResourcePublic,
    summary="Publish a draft",
    responses=problem_responses(CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND, RegistryProblem.INVALID_STATE),
)
async def publish_resource(
    code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> ResourcePublic:
    resource = await service.publish_resource(uow, principal, code, events_topic(rt), today(rt))
    return resource_public(resource)


@router.get(
    "/resources/{code:path}",
    response_model=ResourcePublic,
    summary="One catalogue entry",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_resource(code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> ResourcePublic:
    return resource_public(await service.get_resource(uow.session, principal, code))

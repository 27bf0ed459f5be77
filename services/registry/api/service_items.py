"""Service items (政务服务事项), their materials, and the registry's figures. HTTP in, one domain
call, HTTP out."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.common.errors import CommonProblem, problem_responses
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.common.uow import UnitOfWork
from services.registry.api.common import AUTH, CalendarDep, TopicsDep, today
from services.registry.models import Material, ServiceItem
from services.registry.problems import RegistryProblem
from services.registry.service_items import service
from services.registry.service_items.schemas import (
    MaterialPublic,
    MaterialSpec,
    ServiceItemCreate,
    ServiceItemList,
    ServiceItemPatch,
    ServiceItemPublic,
    StatsPublic,
)
from services.registry.service_items.stats import exempt_materials, rate, registry_stats

router = APIRouter(prefix="/v1/registry", tags=["registry: service items"], responses=problem_responses(*AUTH))

OWN = (CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND)
MAPPING = (CommonProblem.NOT_FOUND, RegistryProblem.UNKNOWN_ITEMS)


def material_public(m: Material, exempt: set[uuid.UUID]) -> MaterialPublic:
    return MaterialPublic(
        id=m.id,
        service_item=m.service_item_code,
        name=m.name,
        source=m.source,
        necessity=m.necessity,
        resource=m.resource_code,
        items=m.items,
        exempt=m.id in exempt,
    )


def service_item_public(item: ServiceItem, materials: list[Material], exempt: set[uuid.UUID]) -> ServiceItemPublic:
    mine = sum(m.id in exempt for m in materials)
    return ServiceItemPublic(
        code=item.code,
        name=item.name,
        dept=item.dept,
        materials=[material_public(m, exempt) for m in materials],
        exempt_materials=mine,
        exempt_rate=rate(mine, len(materials)),
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


async def exempt_of(uow: UnitOfWork, *codes: str) -> set[uuid.UUID]:
    """The 免提交 materials of ``codes`` as the unit of work sees them (its own writes included)."""
    await uow.session.flush()
    return await exempt_materials(uow.session, codes, datetime.now(UTC))


async def item_public(uow: UnitOfWork, found: tuple[ServiceItem, list[Material]]) -> ServiceItemPublic:
    return service_item_public(*found, await exempt_of(uow, found[0].code))


@router.post(
    "/service-items",
    status_code=201,
    response_model=ServiceItemPublic,
    summary="Register a service item of your department with its materials (data_admin)",
    responses=problem_responses(*OWN, *MAPPING, RegistryProblem.SERVICE_ITEM_EXISTS),
)
async def create_service_item(
    body: ServiceItemCreate, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> ServiceItemPublic:
    return await item_public(uow, await service.create_service_item(uow, principal, body, topics))


@router.get("/service-items", response_model=ServiceItemList, summary="Service items (事项清单)")
async def list_service_items(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    dept: Annotated[str | None, Query(min_length=18, max_length=18)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ServiceItemList:
    rows, next_cursor = await service.list_service_items(uow.session, dept=dept, limit=limit, cursor=cursor)
    exempt = await exempt_of(uow, *(i.code for i, _ in rows))
    return ServiceItemList(items=[service_item_public(i, m, exempt) for i, m in rows], next_cursor=next_cursor)


@router.get(
    "/service-items/{code}",
    response_model=ServiceItemPublic,
    summary="One service item with its materials",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_service_item(code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> ServiceItemPublic:
    return await item_public(uow, await service.get_service_item(uow.session, code))


@router.patch(
    "/service-items/{code}",
    response_model=ServiceItemPublic,
    summary="Rename a service item of your department",
    responses=problem_responses(*OWN),
)
async def update_service_item(
    code: str, body: ServiceItemPatch, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> ServiceItemPublic:
    return await item_public(uow, await service.update_service_item(uow, principal, code, body, topics))


@router.delete(
    "/service-items/{code}",
    status_code=204,
    response_class=Response,
    summary="Withdraw a service item of your department, with its materials",
    responses=problem_responses(*OWN),
)
async def delete_service_item(
    code: str, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> Response:
    await service.delete_service_item(uow, principal, code, topics)
    return Response(status_code=204)


@router.post(
    "/service-items/{code}/materials",
    status_code=201,
    response_model=MaterialPublic,
    summary="Add a material to a service item of your department",
    responses=problem_responses(*OWN, *MAPPING),
)
async def add_material(
    code: str, body: MaterialSpec, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> MaterialPublic:
    material = await service.add_material(uow, principal, code, body, topics)
    return material_public(material, await exempt_of(uow, code))


@router.put(
    "/service-items/{code}/materials/{material_id}",
    response_model=MaterialPublic,
    summary="Rewrite a material (name, 来源渠道, 必要性, mapping)",
    responses=problem_responses(*OWN, *MAPPING),
)
async def replace_material(
    code: str,
    material_id: uuid.UUID,
    body: MaterialSpec,
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    topics: TopicsDep,
) -> MaterialPublic:
    material = await service.replace_material(uow, principal, code, material_id, body, topics)
    return material_public(material, await exempt_of(uow, code))


@router.delete(
    "/service-items/{code}/materials/{material_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a material",
    responses=problem_responses(*OWN),
)
async def delete_material(
    code: str, material_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> Response:
    await service.delete_material(uow, principal, code, material_id, topics)
    return Response(status_code=204)


@router.get(
    "/stats",
    response_model=StatsPublic,
    summary="Materials and 免提交, resources by sharing class, 责任清单 fulfilment, pending applications",
)
async def stats(principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep, calendar: CalendarDep) -> StatsPublic:
    return await registry_stats(uow.session, today=today(rt), now=datetime.now(UTC), calendar=calendar)

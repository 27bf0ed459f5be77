"""The three lists (三清单): 责任清单, 需求清单, 负面清单. HTTP in, one domain call, HTTP out."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Response

from services.common.errors import CommonProblem, problem_responses
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.registry.api.common import AUTH, TopicsDep, audit_topic, today
from services.registry.lists import service
from services.registry.lists.schemas import (
    DemandAccept,
    DemandCreate,
    DemandList,
    DemandPublic,
    DemandReject,
    NegativeLineAdded,
    NegativeLineCreate,
    NegativeLineList,
    NegativeLinePublic,
    ResponsibilityCreate,
    ResponsibilityList,
    ResponsibilityPatch,
    ResponsibilityPublic,
    ResponsibilityStatus,
)
from services.registry.models import Demand, DemandStatus, NegativeLine, Responsibility
from services.registry.problems import RegistryProblem

router = APIRouter(prefix="/v1/registry", tags=["registry: lists"], responses=problem_responses(*AUTH))

Dept = Annotated[str | None, Query(min_length=18, max_length=18, description="统一社会信用代码 of a department")]
Limit = Annotated[int, Query(ge=1, le=500)]


def responsibility_public(line: Responsibility, on: date) -> ResponsibilityPublic:
    return ResponsibilityPublic(
        id=line.id,
        dept=line.dept,
        name=line.name,
        items=line.items,
        share_type=line.share_type,
        mode=line.mode,
        update_cycle=line.update_cycle,
        due_by=line.due_by,
        status=service.responsibility_status(line, on),
        fulfilled_by=line.fulfilled_by,
        fulfilled_on=line.fulfilled_on,
        demand_id=line.demand_id,
    )


def demand_public(d: Demand) -> DemandPublic:
    return DemandPublic(
        id=d.id,
        requester=d.requester_dept,
        provider=d.provider_dept,
        name=d.name,
        items=d.items,
        service_item=d.service_item,
        basis=d.basis,
        update_cycle=d.update_cycle,
        status=d.status,
        reason=d.reason,
        responsibility_id=d.responsibility_id,
        created_at=d.created_at,
        decided_at=d.decided_at,
    )


def negative_public(n: NegativeLine) -> NegativeLinePublic:
    return NegativeLinePublic(
        id=n.id, dept=n.dept, resource=n.resource_code, item=n.item, basis=n.basis, created_at=n.created_at
    )


OWN = (CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND)

# --------------------------------------------------------------------------- 责任清单


@router.post(
    "/responsibilities",
    status_code=201,
    response_model=ResponsibilityPublic,
    summary="Add a line to your department's 责任清单 (data_admin)",
    responses=problem_responses(CommonProblem.FORBIDDEN),
)
async def create_responsibility(
    body: ResponsibilityCreate, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> ResponsibilityPublic:
    on = today(rt)
    return responsibility_public(await service.create_responsibility(uow, principal, body, on), on)


@router.get("/responsibilities", response_model=ResponsibilityList, summary="The 责任清单")
async def list_responsibilities(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    rt: RuntimeDep,
    dept: Dept = None,
    status: ResponsibilityStatus | None = None,
    limit: Limit = 100,
    cursor: uuid.UUID | None = None,
) -> ResponsibilityList:
    on = today(rt)
    rows, next_cursor = await service.list_responsibilities(
        uow.session, dept=dept, status=status, today=on, limit=limit, cursor=cursor
    )
    return ResponsibilityList(items=[responsibility_public(r, on) for r in rows], next_cursor=next_cursor)


@router.get(
    "/responsibilities/{line_id}",
    response_model=ResponsibilityPublic,
    summary="One line of the 责任清单",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_responsibility(
    line_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> ResponsibilityPublic:
    return responsibility_public(await service.get_responsibility(uow.session, line_id), today(rt))


@router.patch(
    "/responsibilities/{line_id}",
    response_model=ResponsibilityPublic,
    summary="Change a planned line of your department's 责任清单",
    responses=problem_responses(*OWN, RegistryProblem.INVALID_STATE),
)
async def update_responsibility(
    line_id: uuid.UUID, body: ResponsibilityPatch, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> ResponsibilityPublic:
    on = today(rt)
    return responsibility_public(await service.update_responsibility(uow, principal, line_id, body, on), on)


# --------------------------------------------------------------------------- 需求清单


@router.post(
    "/demands",
    status_code=201,
    response_model=DemandPublic,
    summary="Ask another department for data (需求清单; data_admin)",
    responses=problem_responses(CommonProblem.FORBIDDEN, RegistryProblem.DEMAND_TO_SELF),
)
async def create_demand(body: DemandCreate, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> DemandPublic:
    return demand_public(await service.create_demand(uow, principal, body))


@router.get("/demands", response_model=DemandList, summary="Demands your department sent or received")
async def list_demands(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    status: DemandStatus | None = None,
    limit: Limit = 100,
    cursor: uuid.UUID | None = None,
) -> DemandList:
    rows, next_cursor = await service.list_demands(uow.session, principal, status=status, limit=limit, cursor=cursor)
    return DemandList(items=[demand_public(d) for d in rows], next_cursor=next_cursor)


@router.get(
    "/demands/{demand_id}",
    response_model=DemandPublic,
    summary="One demand (its requester and provider only)",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_demand(demand_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> DemandPublic:
    return demand_public(await service.get_demand(uow.session, principal, demand_id))


@router.post(
    "/demands/{demand_id}/accept",
    response_model=ResponsibilityPublic,
    summary="Accept a demand: it becomes a line of your 责任清单 (provider's data_admin)",
    responses=problem_responses(*OWN, RegistryProblem.INVALID_STATE),
)
async def accept_demand(
    demand_id: uuid.UUID, body: DemandAccept, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> ResponsibilityPublic:
    on = today(rt)
    _, line = await service.accept_demand(uow, principal, demand_id, body, on, audit_topic(rt))
    return responsibility_public(line, on)


@router.post(
    "/demands/{demand_id}/reject",
    response_model=DemandPublic,
    summary="Reject a demand with a reason (provider's data_admin)",
    responses=problem_responses(*OWN, RegistryProblem.INVALID_STATE),
)
async def reject_demand(
    demand_id: uuid.UUID, body: DemandReject, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> DemandPublic:
    return demand_public(await service.reject_demand(uow, principal, demand_id, body.reason, audit_topic(rt)))


# --------------------------------------------------------------------------- 负面清单


@router.post(
    "/negative-list",
    status_code=201,
    response_model=NegativeLineAdded,
    summary="Put a resource of yours, or one of its items, on the 负面清单, with its legal basis; "
    "the live grants that cover it are revoked",
    responses=problem_responses(*OWN, RegistryProblem.UNKNOWN_ITEMS, RegistryProblem.ALREADY_LISTED),
)
async def add_negative_line(
    body: NegativeLineCreate, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> NegativeLineAdded:
    line, revoked = await service.add_negative_line(uow, principal, body, topics)
    return NegativeLineAdded(**negative_public(line).model_dump(), revoked_grants=[g.id for g in revoked])


@router.get("/negative-list", response_model=NegativeLineList, summary="The 负面清单")
async def list_negative_lines(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    dept: Dept = None,
    resource: Annotated[str | None, Query(max_length=40)] = None,
    limit: Limit = 100,
    cursor: uuid.UUID | None = None,
) -> NegativeLineList:
    rows, next_cursor = await service.list_negative_lines(
        uow.session, dept=dept, resource=resource, limit=limit, cursor=cursor
    )
    return NegativeLineList(items=[negative_public(n) for n in rows], next_cursor=next_cursor)


@router.delete(
    "/negative-list/{line_id}",
    status_code=204,
    response_class=Response,
    summary="Take a line of yours off the 负面清单",
    responses=problem_responses(*OWN),
)
async def remove_negative_line(
    line_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> Response:
    await service.remove_negative_line(uow, principal, line_id, audit_topic(rt))
    return Response(status_code=204)

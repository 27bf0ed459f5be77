"""Registry routes: HTTP in, domain calls, HTTP out."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from services.common.clock import business_date
from services.common.errors import CommonProblem, problem_responses
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.registry import service
from services.registry.identity import SystemDirectory
from services.registry.models import Application, Grant, Resource, ResourceStatus
from services.registry.problems import RegistryProblem
from services.registry.schemas import (
    ApplicationApprove,
    ApplicationCreate,
    ApplicationPublic,
    ApplicationReject,
    GrantList,
    GrantPublic,
    GrantRevoke,
    ResourceCreate,
    ResourceList,
    ResourcePublic,
    ShareType,
)

AUTH = (CommonProblem.UNAUTHORIZED, CommonProblem.VALIDATION)
router = APIRouter(prefix="/v1/registry", tags=["registry"], responses=problem_responses(*AUTH))


def events_topic(rt: RuntimeDep) -> str:
    return rt.settings.topic("registry.events")


def today(rt: RuntimeDep) -> date:
    return business_date(rt.settings.zone)


def resource_public(r: Resource) -> ResourcePublic:
    return ResourcePublic.model_validate(
        {**{c: getattr(r, c) for c in ResourcePublic.model_fields if hasattr(r, c)}, "provider": r.provider_dept}
    )


def application_public(a: Application, grant: Grant | None = None) -> ApplicationPublic:
    return ApplicationPublic(
        id=a.id,
        resource=a.resource_code,
        provider=a.provider_dept,
        consumer=a.consumer_dept,
        client_id=a.client_id,
        items=a.items,
        purpose=a.purpose,
        valid_days=a.valid_days,
        daily_quota=a.daily_quota,
        status=a.status,
        due_by=a.due_by,
        reason=a.reason,
        grant_id=grant.id if grant else None,
    )


def grant_public(g: Grant) -> GrantPublic:
    return GrantPublic(
        id=g.id,
        application_id=g.application_id,
        resource=g.resource_code,
        provider=g.provider_dept,
        consumer=g.consumer_dept,
        client_id=g.client_id,
        items=g.items,
        purpose=g.purpose,
        masking=g.masking,
        valid_until=g.valid_until,
        daily_quota=g.daily_quota,
        status=g.status,
    )


@router.post(
    "/resources",
    status_code=201,
    response_model=ResourcePublic,
    summary="Create a draft catalogue entry",
    responses=problem_responses(CommonProblem.FORBIDDEN, RegistryProblem.CATEGORY_FULL),
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


@router.post(
    "/applications",
    status_code=201,
    response_model=ApplicationPublic,
    summary="Apply for access",
    responses=problem_responses(
        CommonProblem.FORBIDDEN,
        CommonProblem.NOT_FOUND,
        RegistryProblem.UNKNOWN_CLIENT,
        RegistryProblem.RESOURCE_NOT_PUBLISHED,
        RegistryProblem.UNKNOWN_ITEMS,
        RegistryProblem.DUPLICATE_ITEMS,
        RegistryProblem.GATEWAY_UNAVAILABLE,
    ),
)
async def create_application(
    body: ApplicationCreate,
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    rt: RuntimeDep,
    request: Request,
    authorization: Annotated[str, Header()],
) -> ApplicationPublic:
    if principal.is_system:
        client_dept: str | None = principal.dept if body.client_id == principal.client_id else None
    else:
        systems: SystemDirectory = request.app.state.systems
        client_dept = await systems.department_of(body.client_id, authorization)
    application, grant = await service.create_application(
        uow, principal, body, client_dept=client_dept, topic=events_topic(rt), today=today(rt)
    )
    return application_public(application, grant)


DECIDE = (CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND, RegistryProblem.INVALID_STATE)


@router.post(
    "/applications/{application_id}/approve",
    response_model=ApplicationPublic,
    summary="Approve (may narrow)",
    responses=problem_responses(*DECIDE, RegistryProblem.WIDENING, RegistryProblem.UNKNOWN_ITEMS),
)
async def approve_application(
    application_id: uuid.UUID, body: ApplicationApprove, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> ApplicationPublic:
    application, grant = await service.approve_application(uow, principal, application_id, body, events_topic(rt))
    return application_public(application, grant)


@router.post(
    "/applications/{application_id}/reject",
    response_model=ApplicationPublic,
    summary="Reject with a reason",
    responses=problem_responses(*DECIDE),
)
async def reject_application(
    application_id: uuid.UUID, body: ApplicationReject, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> ApplicationPublic:
    return application_public(await service.reject_application(uow.session, principal, application_id, body.reason))


@router.get(
    "/applications/{application_id}",
    response_model=ApplicationPublic,
    summary="One application",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_application(
    application_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep
) -> ApplicationPublic:
    return application_public(await service.get_application(uow.session, principal, application_id))


@router.get("/grants", response_model=GrantList, summary="Grants of your department (as consumer or provider)")
async def list_grants(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: uuid.UUID | None = None,
) -> GrantList:
    rows, next_cursor = await service.list_grants(uow.session, principal, limit, str(cursor) if cursor else None)
    return GrantList(items=[grant_public(g) for g in rows], next_cursor=next_cursor)


@router.post(
    "/grants/{grant_id}/revoke",
    response_model=GrantPublic,
    summary="Revoke a grant",
    responses=problem_responses(*DECIDE),
)
async def revoke_grant(
    grant_id: uuid.UUID, body: GrantRevoke, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep
) -> GrantPublic:
    return grant_public(await service.revoke_grant(uow, principal, grant_id, body.reason, events_topic(rt)))

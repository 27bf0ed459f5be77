"""Application and grant routes (共享申请, 授权): HTTP in, one domain call, HTTP out."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from services.common.calendar import WorkingCalendar
from services.common.errors import CommonProblem, problem_responses
from services.common.runtime import CurrentPrincipal, RuntimeDep, UnitOfWorkDep
from services.registry.api.common import AUTH, CalendarDep, TopicsDep, today
from services.registry.applications import service
from services.registry.applications.schemas import (
    ApplicationApprove,
    ApplicationCreate,
    ApplicationList,
    ApplicationPublic,
    ApplicationReject,
    GrantList,
    GrantPublic,
    GrantRevoke,
)
from services.registry.identity import SystemDirectory
from services.registry.models import Application, ApplicationStatus, Grant
from services.registry.problems import RegistryProblem

router = APIRouter(prefix="/v1/registry", tags=["registry"], responses=problem_responses(*AUTH))


def application_public(
    a: Application, today: date, calendar: WorkingCalendar, grant: Grant | None = None
) -> ApplicationPublic:
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
        working_days_left=service.working_days_left(a, today, calendar),
        overdue=service.is_overdue(a, today),
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
        revoked_reason=g.revoked_reason,
    )


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
        RegistryProblem.NOT_SHARED,
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
    topics: TopicsDep,
    calendar: CalendarDep,
    request: Request,
    authorization: Annotated[str, Header()],
) -> ApplicationPublic:
    if principal.is_system:
        client_dept: str | None = principal.dept if body.client_id == principal.client_id else None
    else:
        systems: SystemDirectory = request.app.state.systems
        client_dept = await systems.department_of(body.client_id, authorization)
    day = today(rt)
    application, grant = await service.create_application(
        uow, principal, body, client_dept=client_dept, topics=topics, today=day, calendar=calendar
    )
    return application_public(application, day, calendar, grant)


DECIDE = (CommonProblem.FORBIDDEN, CommonProblem.NOT_FOUND, RegistryProblem.INVALID_STATE)


@router.post(
    "/applications/{application_id}/approve",
    response_model=ApplicationPublic,
    summary="Approve (may narrow)",
    responses=problem_responses(*DECIDE, RegistryProblem.WIDENING, RegistryProblem.UNKNOWN_ITEMS),
)
async def approve_application(
    application_id: uuid.UUID,
    body: ApplicationApprove,
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    rt: RuntimeDep,
    topics: TopicsDep,
    calendar: CalendarDep,
) -> ApplicationPublic:
    application, grant = await service.approve_application(uow, principal, application_id, body, topics)
    return application_public(application, today(rt), calendar, grant)


@router.post(
    "/applications/{application_id}/reject",
    response_model=ApplicationPublic,
    summary="Reject with a reason",
    responses=problem_responses(*DECIDE),
)
async def reject_application(
    application_id: uuid.UUID,
    body: ApplicationReject,
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    rt: RuntimeDep,
    topics: TopicsDep,
    calendar: CalendarDep,
) -> ApplicationPublic:
    application = await service.reject_application(uow, principal, application_id, body.reason, topics)
    return application_public(application, today(rt), calendar)


@router.get(
    "/applications",
    response_model=ApplicationList,
    summary="Applications you may see (an approver's queue: status=pending&provider=<your department>)",
    responses=problem_responses(RegistryProblem.INVALID_CURSOR),
)
async def list_applications(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    rt: RuntimeDep,
    calendar: CalendarDep,
    status: ApplicationStatus | None = None,
    resource: Annotated[str | None, Query(max_length=40)] = None,
    consumer: Annotated[str | None, Query(max_length=18)] = None,
    provider: Annotated[str | None, Query(max_length=18)] = None,
    overdue: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ApplicationList:
    day = today(rt)
    filters = service.ApplicationFilters(status, resource, consumer, provider, overdue)
    rows, next_cursor, overdue_count = await service.list_applications(
        uow.session, principal, filters, limit=limit, cursor=cursor, today=day
    )
    return ApplicationList(
        items=[application_public(a, day, calendar) for a in rows], next_cursor=next_cursor, overdue=overdue_count
    )


@router.get(
    "/applications/{application_id}",
    response_model=ApplicationPublic,
    summary="One application",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_application(
    application_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep, rt: RuntimeDep, calendar: CalendarDep
) -> ApplicationPublic:
    application = await service.get_application(uow.session, principal, application_id)
    grant = await service.grant_of(uow.session, application.id)
    return application_public(application, today(rt), calendar, grant)


@router.get("/grants", response_model=GrantList, summary="Grants of your department (as consumer or provider)")
async def list_grants(
    principal: CurrentPrincipal,
    uow: UnitOfWorkDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: uuid.UUID | None = None,
) -> GrantList:
    rows, next_cursor = await service.list_grants(uow.session, principal, limit, str(cursor) if cursor else None)
    return GrantList(items=[grant_public(g) for g in rows], next_cursor=next_cursor)


@router.get(
    "/grants/{grant_id}",
    response_model=GrantPublic,
    summary="A grant (授权): its terms and status",
    responses=problem_responses(CommonProblem.NOT_FOUND),
)
async def get_grant(grant_id: uuid.UUID, principal: CurrentPrincipal, uow: UnitOfWorkDep) -> GrantPublic:
    return grant_public(await service.get_grant(uow.session, principal, grant_id))


@router.post(
    "/grants/{grant_id}/revoke",
    response_model=GrantPublic,
    summary="Revoke a grant",
    responses=problem_responses(*DECIDE),
)
async def revoke_grant(
    grant_id: uuid.UUID, body: GrantRevoke, principal: CurrentPrincipal, uow: UnitOfWorkDep, topics: TopicsDep
) -> GrantPublic:
    return grant_public(await service.revoke_grant(uow, principal, grant_id, body.reason, topics))

"""Registry routes: HTTP in, domain calls, HTTP out."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from services.common.outbox import Outbox
from services.common.runtime import CurrentPrincipal, RuntimeDep
from services.registry import service
from services.registry.models import Application, Grant, Resource
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
    ResourceStatus,
    ShareType,
)

router = APIRouter(prefix="/v1/registry", tags=["registry"])


def outbox_of(request: Request) -> Outbox:
    outbox: Outbox = request.app.state.outbox
    return outbox


def events_topic(request: Request) -> str:
    return str(request.app.state.runtime.settings.topic("registry.events"))


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


@router.post("/resources", status_code=201, response_model=ResourcePublic, summary="Create a draft catalogue entry")
async def create_resource(body: ResourceCreate, principal: CurrentPrincipal, request: Request) -> ResourcePublic:
    async with outbox_of(request).transaction() as session:
        return resource_public(await service.create_resource(session, principal, body))


@router.get("/resources", response_model=ResourceList, summary="Search the catalogue")
async def list_resources(
    principal: CurrentPrincipal,
    rt: RuntimeDep,
    q: Annotated[str | None, Query(max_length=100)] = None,
    provider: Annotated[str | None, Query(max_length=18)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    share_type: ShareType | None = None,
    status: ResourceStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> ResourceList:
    filters = {"q": q, "provider": provider, "category": category, "share_type": share_type, "status": status}
    async with rt.sessions() as session:
        rows, next_cursor = await service.list_resources(session, principal, filters, limit, cursor)
    return ResourceList(items=[resource_public(r) for r in rows], next_cursor=next_cursor)


@router.post("/resources/{code:path}/publish", response_model=ResourcePublic, summary="Publish a draft")
async def publish_resource(code: str, principal: CurrentPrincipal, request: Request) -> ResourcePublic:
    async with outbox_of(request).transaction() as session:
        resource = await service.publish_resource(session, outbox_of(request), principal, code, events_topic(request))
        return resource_public(resource)


@router.get("/resources/{code:path}", response_model=ResourcePublic, summary="One catalogue entry")
async def get_resource(code: str, principal: CurrentPrincipal, rt: RuntimeDep) -> ResourcePublic:
    async with rt.sessions() as session:
        return resource_public(await service.get_resource(session, principal, code))


@router.post("/applications", status_code=201, response_model=ApplicationPublic, summary="Apply for access")
async def create_application(
    body: ApplicationCreate,
    principal: CurrentPrincipal,
    request: Request,
    authorization: Annotated[str, Header()],
) -> ApplicationPublic:
    settings = request.app.state.runtime.settings
    if principal.is_system:
        client_dept: str | None = principal.dept if body.client_id == principal.client_id else None
    else:
        client_dept = await service.system_department(settings.gateway_url, authorization, body.client_id)
    async with outbox_of(request).transaction() as session:
        application, grant = await service.create_application(
            session, outbox_of(request), principal, body, client_dept=client_dept, topic=events_topic(request)
        )
        return application_public(application, grant)


@router.post("/applications/{application_id}/approve", response_model=ApplicationPublic, summary="Approve (may narrow)")
async def approve_application(
    application_id: uuid.UUID, body: ApplicationApprove, principal: CurrentPrincipal, request: Request
) -> ApplicationPublic:
    async with outbox_of(request).transaction() as session:
        application, grant = await service.approve_application(
            session, outbox_of(request), principal, application_id, body, events_topic(request)
        )
        return application_public(application, grant)


@router.post("/applications/{application_id}/reject", response_model=ApplicationPublic, summary="Reject with a reason")
async def reject_application(
    application_id: uuid.UUID, body: ApplicationReject, principal: CurrentPrincipal, rt: RuntimeDep
) -> ApplicationPublic:
    async with rt.sessions.begin() as session:
        return application_public(await service.reject_application(session, principal, application_id, body.reason))


@router.get("/applications/{application_id}", response_model=ApplicationPublic, summary="One application")
async def get_application(application_id: uuid.UUID, principal: CurrentPrincipal, rt: RuntimeDep) -> ApplicationPublic:
    async with rt.sessions() as session:
        return application_public(await service.get_application(session, principal, application_id))


@router.get("/grants", response_model=GrantList, summary="Grants of your department (as consumer or provider)")
async def list_grants(
    principal: CurrentPrincipal,
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: uuid.UUID | None = None,
) -> GrantList:
    async with rt.sessions() as session:
        rows, next_cursor = await service.list_grants(session, principal, limit, str(cursor) if cursor else None)
    return GrantList(items=[grant_public(g) for g in rows], next_cursor=next_cursor)


@router.post("/grants/{grant_id}/revoke", response_model=GrantPublic, summary="Revoke a grant")
async def revoke_grant(
    grant_id: uuid.UUID, body: GrantRevoke, principal: CurrentPrincipal, request: Request
) -> GrantPublic:
    async with outbox_of(request).transaction() as session:
        grant = await service.revoke_grant(
            session, outbox_of(request), principal, grant_id, body.reason, events_topic(request)
        )
        return grant_public(grant)

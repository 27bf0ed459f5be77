"""Application rules: the sharing rules of 国发〔2016〕51号 — unconditional data is granted at once,
conditional data waits for the provider's decision within 10 working days, data not shared is
refused citing its legal basis. No HTTP here."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.contracts.registry import GrantTerms, event_message
from services.common.errors import NotFound
from services.common.masking import grant_masking
from services.common.pagination import one_more, page
from services.common.security import Principal, Role, forbidden
from services.common.uow import UnitOfWork
from services.registry.applications.schemas import ApplicationApprove, ApplicationCreate
from services.registry.catalogue.service import get_resource
from services.registry.lists.service import refuse_negative_listed
from services.registry.models import Application, ApplicationStatus, Grant, GrantStatus, Resource, ResourceStatus
from services.registry.problems import RegistryProblem

APPROVAL_WORKING_DAYS = 10  # 政务数据共享条例: a conditional application is decided within 10 working days


def add_working_days(start: date, days: int) -> date:
    """``days`` working days after ``start``, skipping Saturdays and Sundays.

    Public holidays and 调休 make-up days are not modelled yet; the due date may be early by them.
    """
    current = start
    while days > 0:
        current += timedelta(days=1)
        if current.weekday() < 5:
            days -= 1
    return current


def check_items(resource: Resource, items: list[str]) -> None:
    known = {i["name"] for i in resource.items}
    unknown = [i for i in items if i not in known]
    if unknown:
        raise RegistryProblem.UNKNOWN_ITEMS.problem(f"{resource.code} has no items: {', '.join(unknown)}.")
    if len(set(items)) != len(items):
        raise RegistryProblem.DUPLICATE_ITEMS.problem("Each information item may be listed once.")


async def create_application(
    uow: UnitOfWork,
    principal: Principal,
    body: ApplicationCreate,
    *,
    client_dept: str | None,
    topic: str,
    today: date,
) -> tuple[Application, Grant | None]:
    """Apply for access (共享申请). The sharing class of the resource decides at once:
    unconditional → approved with a grant; conditional → pending, due within
    :data:`APPROVAL_WORKING_DAYS` working days of ``today`` (a business date); not shared →
    refused, citing the legal basis (以共享为原则、不共享为例外)."""
    session = uow.session
    if principal.is_system:  # a system applying for itself
        if body.client_id != principal.client_id or not principal.has_role(Role.CONSUMER):
            raise forbidden("A system may apply only for itself, and only with the consumer role.")
    elif not principal.has_role(Role.DATA_ADMIN):
        raise forbidden("Only a data administrator (or the consuming system itself) may apply.")
    if client_dept != principal.dept:
        raise RegistryProblem.UNKNOWN_CLIENT.problem(f"No system {body.client_id!r} in your department.")
    resource = await get_resource(session, principal, body.resource)
    if resource.status != ResourceStatus.PUBLISHED:
        raise RegistryProblem.RESOURCE_NOT_PUBLISHED.problem(f"{resource.code} is {resource.status}.")
    check_items(resource, body.items)
    await refuse_negative_listed(session, resource.code, body.items)  # 负面清单: never granted
    application = Application(
        id=uuid.uuid4(),
        resource_code=resource.code,
        provider_dept=resource.provider_dept,
        consumer_dept=principal.dept,
        client_id=body.client_id,
        items=body.items,
        purpose=body.purpose.model_dump(),
        valid_days=body.valid_days,
        daily_quota=body.daily_quota,
        applicant=principal.sub,
        status=ApplicationStatus.PENDING,
    )
    session.add(application)
    share = resource.share
    grant = None
    if share["type"] == "unconditional":
        application.status = ApplicationStatus.APPROVED
        application.decided_at = datetime.now(UTC)
        grant = issue_grant(uow, application, resource, {}, topic)
    elif share["type"] == "conditional":
        application.due_by = add_working_days(today, APPROVAL_WORKING_DAYS)
    else:
        application.status = ApplicationStatus.REFUSED
        application.decided_at = datetime.now(UTC)
        application.reason = f"不予共享: {share['basis']}"
    await session.flush()
    return application, grant


def issue_grant(
    uow: UnitOfWork, application: Application, resource: Resource, masking: dict[str, str], topic: str
) -> Grant:
    grant = Grant(
        id=uuid.uuid4(),
        application_id=application.id,
        resource_code=resource.code,
        provider_dept=resource.provider_dept,
        consumer_dept=application.consumer_dept,
        client_id=application.client_id,
        items=application.items,
        purpose=application.purpose["service_item"],
        masking=grant_masking(resource.items, masking),
        valid_until=datetime.now(UTC) + timedelta(days=application.valid_days),
        daily_quota=application.daily_quota,
        status=GrantStatus.ACTIVE,
    )
    uow.session.add(grant)
    issued = GrantTerms(
        id=grant.id,
        resource_code=grant.resource_code,
        provider_dept=grant.provider_dept,
        consumer_dept=grant.consumer_dept,
        client_id=grant.client_id,
        items=grant.items,
        purpose=grant.purpose,
        masking=grant.masking,
        valid_until=grant.valid_until,
        daily_quota=grant.daily_quota,
    )
    uow.emit(event_message(topic, str(grant.id), issued=issued))
    return grant


async def get_application(session: AsyncSession, principal: Principal, application_id: uuid.UUID) -> Application:
    application = await session.get(Application, application_id, with_for_update=True)
    if application is None or principal.dept not in (application.consumer_dept, application.provider_dept):
        raise NotFound("application", str(application_id))
    return application


def require_approver(principal: Principal, application: Application) -> None:
    if principal.dept != application.provider_dept or not principal.has_role(Role.APPROVER):
        raise forbidden("Only an approver of the providing department may decide this application.")
    if application.status != ApplicationStatus.PENDING:
        raise RegistryProblem.INVALID_STATE.problem(f"The application is already {application.status}.")


async def approve_application(
    uow: UnitOfWork, principal: Principal, application_id: uuid.UUID, body: ApplicationApprove, topic: str
) -> tuple[Application, Grant]:
    """Approve a pending application; the approver may only narrow what was asked for."""
    session = uow.session
    application = await get_application(session, principal, application_id)
    require_approver(principal, application)
    resource = await session.get(Resource, application.resource_code)
    assert resource is not None
    if body.items is not None:
        if not set(body.items) <= set(application.items):
            raise RegistryProblem.WIDENING.problem("The approval may only narrow the items asked for.")
        application.items = body.items
    if body.valid_days is not None:
        if body.valid_days > application.valid_days:
            raise RegistryProblem.WIDENING.problem("The approval may only shorten the validity.")
        application.valid_days = body.valid_days
    if body.daily_quota is not None:
        if body.daily_quota > application.daily_quota:
            raise RegistryProblem.WIDENING.problem("The approval may only lower the quota.")
        application.daily_quota = body.daily_quota
    unknown = set(body.masking) - set(application.items)
    if unknown:
        raise RegistryProblem.UNKNOWN_ITEMS.problem(f"Masking for items not granted: {', '.join(sorted(unknown))}.")
    await refuse_negative_listed(session, resource.code, application.items)  # listed after it was filed
    application.status = ApplicationStatus.APPROVED
    application.decided_by = principal.sub
    application.decided_at = datetime.now(UTC)
    grant = issue_grant(uow, application, resource, dict(body.masking), topic)
    await session.flush()
    return application, grant


async def reject_application(
    session: AsyncSession, principal: Principal, application_id: uuid.UUID, reason: str
) -> Application:
    application = await get_application(session, principal, application_id)
    require_approver(principal, application)
    application.status = ApplicationStatus.REJECTED
    application.reason = reason
    application.decided_by = principal.sub
    application.decided_at = datetime.now(UTC)
    return application


async def list_grants(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[Grant], str | None]:
    query = one_more(
        select(Grant)
        .where((Grant.consumer_dept == principal.dept) | (Grant.provider_dept == principal.dept))
        .order_by(Grant.id),
        limit,
    )
    if cursor:
        query = query.where(Grant.id > uuid.UUID(cursor))
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda g: g.id)


async def revoke_grant(uow: UnitOfWork, principal: Principal, grant_id: uuid.UUID, reason: str, topic: str) -> Grant:
    grant = await uow.session.get(Grant, grant_id, with_for_update=True)
    if grant is None or principal.dept not in (grant.consumer_dept, grant.provider_dept):
        raise NotFound("grant", str(grant_id))
    if principal.dept != grant.provider_dept or not principal.has_role(Role.APPROVER, Role.DATA_ADMIN):
        raise forbidden("Only the providing department's approver or data administrator may revoke a grant.")
    if grant.status == GrantStatus.REVOKED:
        raise RegistryProblem.INVALID_STATE.problem(f"Grant {grant_id} is already revoked.")
    grant.status = GrantStatus.REVOKED
    grant.revoked_reason = reason
    uow.emit(event_message(topic, str(grant.id), revoked=(grant.id, reason)))
    return grant

"""Application rules: the sharing rules of 国发〔2016〕51号 — unconditional data is granted at once,
conditional data waits for the provider's decision within 10 working days, data not shared is
refused citing its legal basis. No HTTP here."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, not_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.calendar import WorkingCalendar
from services.common.errors import CommonProblem, NotFound
from services.common.masking import grant_masking
from services.common.pagination import one_more, page
from services.common.security import Principal, Role, forbidden
from services.common.uow import UnitOfWork
from services.registry.applications.schemas import ApplicationApprove, ApplicationCreate
from services.registry.catalogue.service import get_resource
from services.registry.events import (
    ApplicationTransition,
    Topics,
    application_transition,
    grant_issued,
    grant_revoked,
)
from services.registry.lists.service import refuse_negative_listed
from services.registry.models import Application, ApplicationStatus, Grant, GrantStatus, Resource, ResourceStatus
from services.registry.problems import RegistryProblem

APPROVAL_WORKING_DAYS = 10  # 政务数据共享条例: a conditional application is decided within 10 working days
AUTOMATIC = "registry:unconditional"  # who approves unconditional sharing: the rule, at once (无条件共享)


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
    topics: Topics,
    today: date,
    calendar: WorkingCalendar,
) -> tuple[Application, Grant | None]:
    """Apply for access (共享申请). The sharing class of the resource decides: unconditional →
    approved at once with a grant; conditional → pending, due :data:`APPROVAL_WORKING_DAYS`
    working days after ``today`` (a business date) on the official calendar; not shared → refused
    with a problem citing the legal basis, and nothing is written (以共享为原则、不共享为例外)."""
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
    share = resource.share
    if share["type"] == "none":
        raise RegistryProblem.NOT_SHARED.problem(
            f"{resource.code} 不予共享 (not shared), 依据 (basis): {share['basis']}",
            extra={"basis": share["basis"]},
        )
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
    if share["type"] == "conditional":
        application.due_by = calendar.add_working_days(today, APPROVAL_WORKING_DAYS)
    session.add(application)
    application_transition(uow, topics, principal.sub, application, ApplicationTransition.SUBMITTED)
    grant = None
    if share["type"] == "unconditional":
        application.status = ApplicationStatus.APPROVED
        application.decided_by = AUTOMATIC
        application.decided_at = datetime.now(UTC)
        until = application.decided_at + timedelta(days=application.valid_days)
        grant = issue_grant(uow, topics, application, resource, {}, until)
        application_transition(uow, topics, AUTOMATIC, application, ApplicationTransition.APPROVED, grant)
    await session.flush()
    return application, grant


def issue_grant(
    uow: UnitOfWork,
    topics: Topics,
    application: Application,
    resource: Resource,
    masking: dict[str, str],
    valid_until: datetime,
) -> Grant:
    """授权: the terms the exchange will enforce — the application's items, purpose (事项), validity
    and daily quota as (perhaps narrowed and) approved, and the masking rules."""
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
        valid_until=valid_until,
        daily_quota=application.daily_quota,
        status=GrantStatus.ACTIVE,
    )
    uow.session.add(grant)
    grant_issued(uow, topics, grant)
    return grant


# --------------------------------------------------------------------------- who sees what


def visible_applications(principal: Principal) -> ColumnElement[bool]:
    """What ``principal`` may see: a system only its own applications (it is the consumer); a
    person those of their department, as consumer or as provider."""
    if principal.is_system:
        return and_(Application.client_id == principal.client_id, Application.consumer_dept == principal.dept)
    return or_(Application.consumer_dept == principal.dept, Application.provider_dept == principal.dept)


def sees_application(principal: Principal, application: Application) -> bool:
    if principal.is_system:
        return (application.client_id, application.consumer_dept) == (principal.client_id, principal.dept)
    return principal.dept in (application.consumer_dept, application.provider_dept)


def sees_grant(principal: Principal, grant: Grant) -> bool:
    if principal.is_system:
        return (grant.client_id, grant.consumer_dept) == (principal.client_id, principal.dept)
    return principal.dept in (grant.consumer_dept, grant.provider_dept)


async def get_application(session: AsyncSession, principal: Principal, application_id: uuid.UUID) -> Application:
    """One application, locked; one that ``principal`` may not see is a 404, as if it did not exist."""
    application = await session.get(Application, application_id, with_for_update=True)
    if application is None or not sees_application(principal, application):
        raise NotFound("application", str(application_id))
    return application


# --------------------------------------------------------------------------- listing and deadlines


def is_overdue(application: Application, today: date) -> bool:
    """逾期: still pending after its due date."""
    return (
        application.status == ApplicationStatus.PENDING
        and application.due_by is not None
        and application.due_by < today
    )


def overdue_clause(today: date) -> ColumnElement[bool]:
    return and_(Application.status == ApplicationStatus.PENDING, Application.due_by < today)


def working_days_left(application: Application, today: date, calendar: WorkingCalendar) -> int | None:
    """Working days from ``today`` to the due date of a pending application (0 on the day,
    negative once overdue); ``None`` for one that is decided."""
    if application.status != ApplicationStatus.PENDING or application.due_by is None:
        return None
    return calendar.working_days_between(today, application.due_by)


@dataclass(frozen=True, slots=True)
class ApplicationFilters:
    status: ApplicationStatus | None = None
    resource: str | None = None
    consumer: str | None = None
    provider: str | None = None
    overdue: bool | None = None


def _checksum(payload: str) -> str:
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def encode_cursor(application: Application) -> str:
    """The opaque position after ``application`` in the (filing time, id) order, with a checksum
    so that an edited or truncated cursor is refused rather than silently read as another position.
    (A forged one can only name a position among what the caller may see anyway.)"""
    payload = f"{application.created_at.isoformat()}|{application.id}"
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=") + "." + _checksum(payload)


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor of :func:`encode_cursor` names; anything else (edited, truncated, made
    up) is an ``invalid-cursor`` problem, never a 500 or a silently wrong page."""
    invalid = RegistryProblem.INVALID_CURSOR.problem(
        "The cursor is not one this list returned; start again without it."
    )
    encoded, _, checksum = cursor.partition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        when, _, ident = payload.partition("|")
        position = datetime.fromisoformat(when), uuid.UUID(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as err:
        raise invalid from err
    if position[0].tzinfo is None or not hmac.compare_digest(checksum, _checksum(payload)):
        raise invalid
    return position


async def list_applications(
    session: AsyncSession,
    principal: Principal,
    filters: ApplicationFilters,
    *,
    limit: int,
    cursor: str | None,
    today: date,
) -> tuple[list[Application], str | None, int]:
    """A page of the applications ``principal`` may see that match ``filters``, oldest first, the
    next page's cursor, and how many of all those matching (every page, the overdue filter aside)
    are overdue. An approver's queue is ``status=pending, provider=<their department>``."""
    conditions: list[ColumnElement[bool]] = [visible_applications(principal)]
    for column, value in (
        (Application.status, filters.status),
        (Application.resource_code, filters.resource),
        (Application.consumer_dept, filters.consumer),
        (Application.provider_dept, filters.provider),
    ):
        if value is not None:
            conditions.append(column == value)
    overdue = await session.scalar(select(func.count()).where(*conditions, overdue_clause(today)))
    if filters.overdue is not None:
        conditions.append(overdue_clause(today) if filters.overdue else not_(overdue_clause(today)))
    query = select(Application).where(*conditions).order_by(Application.created_at, Application.id)
    if cursor:
        query = query.where(tuple_(Application.created_at, Application.id) > tuple_(*decode_cursor(cursor)))
    rows = list((await session.scalars(one_more(query, limit))).all())
    shown, next_cursor = page(rows, limit, encode_cursor)
    return shown, next_cursor, int(overdue or 0)


# --------------------------------------------------------------------------- decisions


def require_approver(principal: Principal, application: Application) -> None:
    if principal.dept != application.provider_dept or not principal.has_role(Role.APPROVER):
        raise forbidden("Only an approver of the providing department may decide this application.")
    if application.status != ApplicationStatus.PENDING:
        raise RegistryProblem.INVALID_STATE.problem(f"The application is already {application.status}.")


def narrowed(application: Application, body: ApplicationApprove, now: datetime) -> tuple[list[str], datetime, int]:
    """The items, end of validity and daily quota an approval decided at ``now`` grants: each as
    asked, or narrower. Anything wider is a ``widening`` problem (批准只能收窄，不能放宽)."""
    items, quota = application.items, application.daily_quota
    asked_until = now + timedelta(days=application.valid_days)
    until = asked_until
    if body.items is not None:
        if not set(body.items) <= set(items):
            extra = sorted(set(body.items) - set(items))
            raise RegistryProblem.WIDENING.problem(
                f"The approval may only narrow the items asked for; not asked: {', '.join(extra)}."
            )
        items = body.items
    if body.valid_days is not None:
        if body.valid_days > application.valid_days:
            raise RegistryProblem.WIDENING.problem(
                f"The approval may only shorten the validity ({body.valid_days} > {application.valid_days} days asked)."
            )
        until = now + timedelta(days=body.valid_days)
    if body.valid_until is not None:
        if body.valid_until > asked_until:
            raise RegistryProblem.WIDENING.problem(
                f"The approval may only shorten the validity (valid_until after {asked_until.isoformat()}, "
                f"the {application.valid_days} days asked)."
            )
        if body.valid_until <= now:
            raise CommonProblem.VALIDATION.problem("valid_until is already past.")
        until = body.valid_until
    if body.daily_quota is not None:
        if body.daily_quota > quota:
            raise RegistryProblem.WIDENING.problem(
                f"The approval may only lower the daily quota ({body.daily_quota} > {quota} asked)."
            )
        quota = body.daily_quota
    return items, until, quota


async def approve_application(
    uow: UnitOfWork, principal: Principal, application_id: uuid.UUID, body: ApplicationApprove, topics: Topics
) -> tuple[Application, Grant]:
    """Approve a pending application (批准); the provider's approver may only narrow what was asked
    for. The grant is issued in the same unit of work."""
    session = uow.session
    application = await get_application(session, principal, application_id)
    require_approver(principal, application)
    resource = await session.get(Resource, application.resource_code)
    if resource is None:  # the catalogue never deletes an entry an application names
        raise RuntimeError(f"application {application.id} names a missing resource")
    now = datetime.now(UTC)
    items, until, quota = narrowed(application, body, now)
    if unknown := set(body.masking) - set(items):
        raise RegistryProblem.UNKNOWN_ITEMS.problem(f"Masking for items not granted: {', '.join(sorted(unknown))}.")
    await refuse_negative_listed(session, resource.code, items)  # listed after it was filed
    application.items, application.daily_quota = items, quota
    application.valid_days = math.ceil((until - now) / timedelta(days=1))  # as granted, in started days
    application.status = ApplicationStatus.APPROVED
    application.decided_by = principal.sub
    application.decided_at = now
    grant = issue_grant(uow, topics, application, resource, dict(body.masking), until)
    application_transition(uow, topics, principal.sub, application, ApplicationTransition.APPROVED, grant)
    await session.flush()
    return application, grant


async def reject_application(
    uow: UnitOfWork, principal: Principal, application_id: uuid.UUID, reason: str, topics: Topics
) -> Application:
    """Reject a pending application (驳回) with a reason the consumer sees."""
    application = await get_application(uow.session, principal, application_id)
    require_approver(principal, application)
    application.status = ApplicationStatus.REJECTED
    application.reason = reason
    application.decided_by = principal.sub
    application.decided_at = datetime.now(UTC)
    application_transition(uow, topics, principal.sub, application, ApplicationTransition.REJECTED)
    await uow.session.flush()
    return application


# --------------------------------------------------------------------------- grants


async def grant_of(session: AsyncSession, application_id: uuid.UUID) -> Grant | None:
    return await session.scalar(select(Grant).where(Grant.application_id == application_id))


async def list_grants(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[Grant], str | None]:
    """Grants ``principal`` may see: a system only its own; a person those of their department,
    as consumer or as provider."""
    if principal.is_system:
        mine = and_(Grant.client_id == principal.client_id, Grant.consumer_dept == principal.dept)
    else:
        mine = or_(Grant.consumer_dept == principal.dept, Grant.provider_dept == principal.dept)
    query = one_more(select(Grant).where(mine).order_by(Grant.id), limit)
    if cursor:
        query = query.where(Grant.id > uuid.UUID(cursor))
    rows = list((await session.scalars(query)).all())
    return page(rows, limit, lambda g: g.id)


async def get_grant(session: AsyncSession, principal: Principal, grant_id: uuid.UUID, *, lock: bool = False) -> Grant:
    """One grant; one that ``principal`` may not see is a 404, as if it did not exist."""
    grant = await session.get(Grant, grant_id, with_for_update=lock)
    if grant is None or not sees_grant(principal, grant):
        raise NotFound("grant", str(grant_id))
    return grant


async def revoke_grant(
    uow: UnitOfWork, principal: Principal, grant_id: uuid.UUID, reason: str, topics: Topics
) -> Grant:
    """撤销授权: the provider's approver or data administrator withdraws a grant; the exchange stops
    honouring it when it applies the ``grant_revoked`` event."""
    grant = await get_grant(uow.session, principal, grant_id, lock=True)
    if principal.dept != grant.provider_dept or not principal.has_role(Role.APPROVER, Role.DATA_ADMIN):
        raise forbidden("Only the providing department's approver or data administrator may revoke a grant.")
    if grant.status == GrantStatus.REVOKED:
        raise RegistryProblem.INVALID_STATE.problem(f"Grant {grant_id} is already revoked.")
    grant.status = GrantStatus.REVOKED
    grant.revoked_reason = reason
    grant_revoked(uow, topics, principal, grant, reason)
    return grant

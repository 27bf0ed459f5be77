"""Registry rules: catalogue codes, who may publish, and the sharing rules of 国发〔2016〕51号 —
unconditional data is granted at once, conditional data waits for the provider's decision within
10 working days, data not shared is refused citing its legal basis. No HTTP here."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.bus import Message
from services.common.errors import NotFound, Problem
from services.common.outbox import Outbox
from services.common.pb import registry_pb2 as pb
from services.common.security import Principal, Role, forbidden
from services.registry.models import Application, Grant, Resource
from services.registry.schemas import ApplicationApprove, ApplicationCreate, ResourceCreate

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


def registry_event(**event: Any) -> bytes:
    return pb.RegistryEvent(
        event_id=uuid.uuid4().hex, occurred_unix_ms=int(time.time() * 1000), **event
    ).SerializeToString()


def event_message(topic: str, key: str, value: bytes) -> Message:
    return Message(topic=topic, key=key.encode(), value=value)


# --------------------------------------------------------------------------- catalogue


def require_data_admin(principal: Principal) -> None:
    if not principal.has_role(Role.DATA_ADMIN, Role.PLATFORM_ADMIN):
        raise forbidden("Only a data administrator may change the catalogue.")


async def next_code(session: AsyncSession, category: str) -> str:
    """信息资源代码 = 分类码 "/" 6-digit 顺序码, allocated under a row lock (unique, never reused)."""
    last = await session.scalar(
        text(
            "INSERT INTO registry.category_sequences (category, last) VALUES (:c, 1) "
            "ON CONFLICT (category) DO UPDATE SET last = category_sequences.last + 1 RETURNING last"
        ),
        {"c": category},
    )
    if last is None or last > 999_999:
        raise Problem(409, "category-full", "No codes left", f"分类 {category} has used all 999999 顺序码.")
    return f"{category}/{last:06d}"


async def create_resource(session: AsyncSession, principal: Principal, body: ResourceCreate) -> Resource:
    require_data_admin(principal)
    resource = Resource(
        code=await next_code(session, body.category),
        name=body.name,
        summary=body.summary,
        category=body.category,
        classification=body.classification,
        provider_dept=principal.dept,
        format=body.format,
        items=[i.model_dump() for i in body.items],
        share=body.share.model_dump(),
        open=body.open.model_dump(),
        update_cycle=body.update_cycle,
        related_codes=body.related_codes,
        subject_types=body.subject_types,
        status="draft",
        version=1,
    )
    session.add(resource)
    await session.flush()
    return resource


def visible(resource: Resource | None, principal: Principal) -> bool:
    return resource is not None and (resource.status != "draft" or resource.provider_dept == principal.dept)


async def get_resource(session: AsyncSession, principal: Principal, code: str, *, lock: bool = False) -> Resource:
    resource = await session.get(Resource, code, with_for_update=lock)
    if resource is None or not visible(resource, principal):
        raise NotFound("resource", code)
    return resource


async def list_resources(
    session: AsyncSession, principal: Principal, filters: dict[str, str | None], limit: int, cursor: str | None
) -> tuple[list[Resource], str | None]:
    query = select(Resource).order_by(Resource.code).limit(limit + 1)
    query = query.where((Resource.status != "draft") | (Resource.provider_dept == principal.dept))
    if cursor:
        query = query.where(Resource.code > cursor)
    if q := filters.get("q"):
        like = f"%{q}%"
        query = query.where(Resource.name.ilike(like) | Resource.summary.ilike(like))
    for column, key in (
        (Resource.provider_dept, "provider"),
        (Resource.category, "category"),
        (Resource.status, "status"),
    ):
        if (value := filters.get(key)) is not None:
            query = query.where(column == value)
    if (share_type := filters.get("share_type")) is not None:
        query = query.where(Resource.share["type"].astext == share_type)
    rows = list((await session.scalars(query)).all())
    return rows[:limit], rows[limit - 1].code if len(rows) > limit else None


async def publish_resource(
    session: AsyncSession, outbox: Outbox, principal: Principal, code: str, topic: str
) -> Resource:
    require_data_admin(principal)
    resource = await get_resource(session, principal, code, lock=True)
    if resource.provider_dept != principal.dept:
        raise forbidden("Only the providing department may publish its resource.")
    if resource.status != "draft":
        raise Problem(409, "invalid-state", "Cannot publish", f"Resource {code} is {resource.status}, not draft.")
    resource.status = "published"
    resource.published_on = datetime.now(UTC).date()
    resource.updated_at = datetime.now(UTC)
    published = pb.ResourcePublished(
        code=resource.code,
        name=resource.name,
        provider_dept=resource.provider_dept,
        version=resource.version,
        share_type=resource.share["type"],
        items=[
            pb.InformationItem(
                name=i["name"],
                data_type=i["data_type"],
                length=i["length"],
                sensitive=i["sensitive"],
                masking=i.get("masking") or "",
            )
            for i in resource.items
        ],
    )
    outbox.add(session, event_message(topic, resource.code, registry_event(resource_published=published)))
    return resource


# --------------------------------------------------------------------------- applications and grants


async def system_department(gateway_url: str, authorization: str, client_id: str) -> str | None:
    """The department owning ``client_id``, asked of the gateway (identity is the gateway's data)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(f"{gateway_url}/v1/systems/{client_id}", headers={"authorization": authorization})
    if response.status_code == 404:
        return None
    response.raise_for_status()
    dept: str = response.json()["dept"]
    return dept


def check_items(resource: Resource, items: list[str]) -> None:
    known = {i["name"] for i in resource.items}
    unknown = [i for i in items if i not in known]
    if unknown:
        raise Problem(
            422, "unknown-items", "Unknown information items", f"{resource.code} has no items: {', '.join(unknown)}."
        )
    if len(set(items)) != len(items):
        raise Problem(422, "duplicate-items", "Duplicate items", "Each information item may be listed once.")


async def create_application(
    session: AsyncSession,
    outbox: Outbox,
    principal: Principal,
    body: ApplicationCreate,
    *,
    client_dept: str | None,
    topic: str,
) -> tuple[Application, Grant | None]:
    if principal.is_system:  # a system applying for itself
        if body.client_id != principal.client_id or not principal.has_role(Role.CONSUMER):
            raise forbidden("A system may apply only for itself, and only with the consumer role.")
    elif not principal.has_role(Role.DATA_ADMIN):
        raise forbidden("Only a data administrator (or the consuming system itself) may apply.")
    if client_dept != principal.dept:
        raise Problem(422, "unknown-client", "Unknown system", f"No system {body.client_id!r} in your department.")
    resource = await get_resource(session, principal, body.resource)
    if resource.status != "published":
        raise Problem(409, "resource-not-published", "Resource not published", f"{resource.code} is {resource.status}.")
    check_items(resource, body.items)
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
        status="pending",
    )
    session.add(application)
    share = resource.share
    grant = None
    if share["type"] == "unconditional":
        application.status = "approved"
        application.decided_at = datetime.now(UTC)
        grant = issue_grant(session, outbox, application, resource, {}, topic)
    elif share["type"] == "conditional":
        application.due_by = add_working_days(datetime.now(UTC).date(), APPROVAL_WORKING_DAYS)
    else:
        application.status = "refused"
        application.decided_at = datetime.now(UTC)
        application.reason = f"不予共享: {share['basis']}"
    await session.flush()
    return application, grant


def default_masking(resource: Resource) -> dict[str, str]:
    return {i["name"]: i["masking"] for i in resource.items if i.get("masking")}


def issue_grant(
    session: AsyncSession,
    outbox: Outbox,
    application: Application,
    resource: Resource,
    masking: dict[str, str],
    topic: str,
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
        masking={**default_masking(resource), **masking},
        valid_until=datetime.now(UTC) + timedelta(days=application.valid_days),
        daily_quota=application.daily_quota,
        status="active",
    )
    session.add(grant)
    issued = pb.GrantIssued(
        grant_id=str(grant.id),
        resource_code=grant.resource_code,
        provider_dept=grant.provider_dept,
        consumer_dept=grant.consumer_dept,
        client_id=grant.client_id,
        items=grant.items,
        purpose=grant.purpose,
        valid_until_unix_ms=int(grant.valid_until.timestamp() * 1000),
        daily_quota=grant.daily_quota,
        masking=grant.masking,
    )
    outbox.add(session, event_message(topic, str(grant.id), registry_event(grant_issued=issued)))
    return grant


async def get_application(session: AsyncSession, principal: Principal, application_id: uuid.UUID) -> Application:
    application = await session.get(Application, application_id, with_for_update=True)
    if application is None or principal.dept not in (application.consumer_dept, application.provider_dept):
        raise NotFound("application", str(application_id))
    return application


def require_approver(principal: Principal, application: Application) -> None:
    if principal.dept != application.provider_dept or not principal.has_role(Role.APPROVER):
        raise forbidden("Only an approver of the providing department may decide this application.")
    if application.status != "pending":
        raise Problem(409, "invalid-state", "Already decided", f"The application is {application.status}.")


async def approve_application(
    session: AsyncSession,
    outbox: Outbox,
    principal: Principal,
    application_id: uuid.UUID,
    body: ApplicationApprove,
    topic: str,
) -> tuple[Application, Grant]:
    application = await get_application(session, principal, application_id)
    require_approver(principal, application)
    resource = await session.get(Resource, application.resource_code)
    assert resource is not None
    if body.items is not None:
        if not set(body.items) <= set(application.items):
            raise Problem(422, "widening", "Cannot widen", "The approval may only narrow the items asked for.")
        application.items = body.items
    if body.valid_days is not None:
        if body.valid_days > application.valid_days:
            raise Problem(422, "widening", "Cannot widen", "The approval may only shorten the validity.")
        application.valid_days = body.valid_days
    if body.daily_quota is not None:
        if body.daily_quota > application.daily_quota:
            raise Problem(422, "widening", "Cannot widen", "The approval may only lower the quota.")
        application.daily_quota = body.daily_quota
    unknown = set(body.masking) - set(application.items)
    if unknown:
        raise Problem(
            422, "unknown-items", "Masking for items not granted", f"Not granted: {', '.join(sorted(unknown))}."
        )
    application.status = "approved"
    application.decided_by = principal.sub
    application.decided_at = datetime.now(UTC)
    grant = issue_grant(session, outbox, application, resource, dict(body.masking), topic)
    await session.flush()
    return application, grant


async def reject_application(
    session: AsyncSession, principal: Principal, application_id: uuid.UUID, reason: str
) -> Application:
    application = await get_application(session, principal, application_id)
    require_approver(principal, application)
    application.status = "rejected"
    application.reason = reason
    application.decided_by = principal.sub
    application.decided_at = datetime.now(UTC)
    return application


async def list_grants(
    session: AsyncSession, principal: Principal, limit: int, cursor: str | None
) -> tuple[list[Grant], str | None]:
    query = (
        select(Grant)
        .where((Grant.consumer_dept == principal.dept) | (Grant.provider_dept == principal.dept))
        .order_by(Grant.id)
        .limit(limit + 1)
    )
    if cursor:
        query = query.where(Grant.id > uuid.UUID(cursor))
    rows = list((await session.scalars(query)).all())
    return rows[:limit], str(rows[limit - 1].id) if len(rows) > limit else None


async def revoke_grant(
    session: AsyncSession, outbox: Outbox, principal: Principal, grant_id: uuid.UUID, reason: str, topic: str
) -> Grant:
    grant = await session.get(Grant, grant_id, with_for_update=True)
    if grant is None or principal.dept not in (grant.consumer_dept, grant.provider_dept):
        raise NotFound("grant", str(grant_id))
    if principal.dept != grant.provider_dept or not principal.has_role(Role.APPROVER, Role.DATA_ADMIN):
        raise forbidden("Only the providing department's approver or data administrator may revoke a grant.")
    if grant.status == "revoked":
        raise Problem(409, "invalid-state", "Already revoked", f"Grant {grant_id} is already revoked.")
    grant.status = "revoked"
    grant.revoked_reason = reason
    revoked = pb.GrantRevoked(grant_id=str(grant.id), reason=reason)
    outbox.add(session, event_message(topic, str(grant.id), registry_event(grant_revoked=revoked)))
    return grant
